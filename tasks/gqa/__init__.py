"""GQA (Hudson & Manning 2019): balanced question files, the official accuracy, the submission file."""
