"""Entry point of the ``nas`` command."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback

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
    from nas.cli import (board_cmd, data_cmd, evaluate_cmd, genotype_cmd, pretrain_cmd, retrain_cmd, search_cmd,
                         submit_cmd, tune_cmd)

    parser = argparse.ArgumentParser(prog="nas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlnas {nas.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error in what was given (a bad file, key or value), also print the traceback")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (search_cmd, tune_cmd, retrain_cmd, pretrain_cmd, submit_cmd, evaluate_cmd, genotype_cmd, board_cmd,
                   data_cmd):
        module.add_parser(commands)
    return parser


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*\.[\w.]+=")


def gather_overrides(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Move dotted ``key=value`` overrides to the end, so they may sit between options
    (argparse alone rejects positionals that follow an option once others came before it)."""
    takes_value = {option for action in _all_actions(parser) if action.nargs != 0
                   for option in action.option_strings}
    moved, kept = [], []
    for position, token in enumerate(argv):
        previous = argv[position - 1] if position else ""
        if _OVERRIDE.match(token) and previous not in takes_value:
            moved.append(token)
        else:
            kept.append(token)
    return kept + moved


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += _all_actions(sub)
    return actions


def one_line(message: str) -> str:
    """The message with its line breaks escaped: a value quoted from a file may hold a newline, and the
    error must stay one line (scripts and log scrapers read the last line)."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(gather_overrides(list(sys.argv[1:] if argv is None else argv), parser))
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not as a traceback at exit
        return status
    except BrokenPipeError:
        # Whoever read the output went away (``nas genotype show G | head``): stop quietly, as cat does,
        # and point stdout at /dev/null so the interpreter's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a process stopped by a closed pipe
    except UserError as error:
        logging.getLogger("nas").debug("user error", exc_info=True)
        if getattr(args, "debug", False):
            traceback.print_exc(file=sys.stderr)
        print(f"nas: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; every file written is complete, and a training run saved its checkpoint at the "
              "last step: run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
