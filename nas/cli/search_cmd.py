"""``nas search``: search an architecture and write its genotype JSON."""

from __future__ import annotations

import argparse
import logging

from nas.cli.common import add_run_arguments, config_layers, resume_layers
from nas.config import resolve_config
from nas.run import make_run_dir, save_config, setup_logging

log = logging.getLogger("nas")

# MmNas's search recipe (search_vqa.py): supernet H=256, lr 4e-4, 100 epochs, no decay.
SEARCH_DEFAULTS = {
    "task": {"name": "vqa"},
    "space": {"name": "mmnas", "hidden": 256},
    "strategy": {"name": "mmnas"},
    "train": {"epochs": 100, "lr": 4e-4, "warmup_epochs": 3, "decay_epochs": []},
}

HELP = """Search an architecture for a task with a differentiable supernet.

Writes to the run directory: genotype.json (the current best architecture,
rewritten every epoch), search_log.jsonl (per-epoch loss, held-out metric,
genotype and op probabilities), config.yaml (the resolved config), log.txt and
search_checkpoint.pt (for --resume).

examples:
  nas search --task vqa --config smoke
  nas search --task vqa --config quickstart --out runs/qs train.epochs=3 space.hidden=128
  nas search --out runs/qs --resume train.epochs=20
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search an architecture; writes genotype.json",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", help="registered task (default vqa)")
    parser.add_argument("--space", help="registered search space (default mmnas)")
    parser.add_argument("--strategy", help="registered search strategy (default mmnas)")
    add_run_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nas.search import run_search

    if args.resume:
        layers = resume_layers(args, "search")
    else:
        layers = config_layers(args, SEARCH_DEFAULTS)
    config = resolve_config(layers)
    run_dir = make_run_dir(args.out, "search", config.task.name)
    setup_logging(run_dir, args.quiet)
    save_config(config, run_dir)
    result = run_search(config, run_dir, progress=not args.quiet, resume=args.resume)
    last = result.history[-1]
    key = f"heldout_{_primary(result)}"
    print(f"genotype: {result.genotype_path}")
    print(f"  held-out {_primary(result)} of the argmax architecture: {last[key]:.2f}"
          f" (epoch {last['epoch']}, unchanged for {last['stable_epochs']} epoch(s))")
    print(f"next: nas retrain --genotype {result.genotype_path}")
    return 0


def _primary(result) -> str:
    return next(k for k in result.genotype.metrics if k.startswith("heldout_"))[len("heldout_"):]


__all__ = ["add_parser"]
