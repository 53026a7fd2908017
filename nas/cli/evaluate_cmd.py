"""``nas evaluate``: a task's official metric on result files."""

from __future__ import annotations

import argparse
import json

from nas.registry import TASKS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a results file with the task's official metric",
        description="Score a results file with the task's official metric, computed exactly as the official "
                    "evaluator does.\n\nexample:\n  nas evaluate --task vqa --questions Q.json --annotations A.json "
                    "--results R.json", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="registered task, e.g. vqa")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    for name in TASKS.names():
        group = parser.add_argument_group(f"--task {name}")
        TASKS.get(name).add_evaluate_arguments(_SharedOptions(parser, group, name))
    parser.set_defaults(handler=run)


class _SharedOptions:
    """A task's argument group in which an option that an earlier task already added (``--results``:
    clevr_ref and vqa) gains this task's help instead of a second, conflicting definition."""

    def __init__(self, parser: argparse.ArgumentParser, group: argparse._ArgumentGroup, task: str) -> None:
        self._parser, self._group, self._task = parser, group, task

    def add_argument(self, *flags: str, **kwargs) -> argparse.Action:
        for flag in flags:
            action = self._parser._option_string_actions.get(flag)
            if action is not None:
                action.help = f"{action.help}; --task {self._task}: {kwargs.get('help', '')}"
                return action
        return self._group.add_argument(*flags, **kwargs)


def run(args: argparse.Namespace) -> int:
    scores = TASKS.get(args.task).evaluate_files(args)
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    for key, value in scores.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for name, score in value.items():
                print(f"  {name:<28} {score:6.2f}")
        elif isinstance(value, float):
            print(f"{key}: {value:.2f}")
        else:
            print(f"{key}: {value}")
    return 0
