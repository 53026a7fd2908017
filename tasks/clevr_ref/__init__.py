"""CLEVR-Ref+ referring-expression segmentation over IEP grid features (see task.py)."""
