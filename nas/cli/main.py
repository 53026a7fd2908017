"""Entry point of the ``nas`` command."""

from __future__ import annotations

import argparse
import logging
import sys

import nas
from nas.errors import UserError

DESCRIPTION = """vlnas: neural architecture search for vision-language models.

A search (nas search) trains a supernet of encoder/decoder ops for a task and
writes a genotype JSON; nas retrain trains that genotype as a fixed network and
writes the evaluation-server results file.

quick start on the built-in dataset:
  nas search --task vqa --config quickstart --out runs/qs/search
  nas retrain --genotype runs/qs/search/genotype.json --config quickstart --out runs/qs/retrain
"""


def build_parser() -> argparse.ArgumentParser:
    import search_spaces  # noqa: F401  (registers built-in spaces)
    import tasks  # noqa: F401  (registers built-in tasks)
    import nas.strategies  # noqa: F401  (registers built-in strategies)
    from nas.cli import data_cmd, evaluate_cmd, genotype_cmd, retrain_cmd, search_cmd

    parser = argparse.ArgumentParser(prog="nas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlnas {nas.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (search_cmd, retrain_cmd, evaluate_cmd, genotype_cmd, data_cmd):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.handler(args)
    except UserError as error:
        logging.getLogger("nas").debug("user error", exc_info=True)
        print(f"nas: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; checkpoints written so far are complete (use --resume to continue)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
