"""``nas search``: search an architecture and write its genotype JSON."""

from __future__ import annotations

import argparse
import logging

from nas.cli.common import add_run_arguments, config_layers, resume_layers, run_on_ranks, should_resume
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
  nas search --task vqa --config smoke --nproc 2

With --nproc N (or torchrun) the ranks share every batch and sum their
architecture gradients, so all of them hold one genotype.
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
    from nas.search import CHECKPOINT

    if args.resume:
        layers = resume_layers(args, "search")
    else:
        layers = config_layers(args, SEARCH_DEFAULTS)
    config = resolve_config(layers)
    run_dir = make_run_dir(args.out, "search", config.task.name)
    setup_logging(run_dir, args.quiet)
    resume = should_resume(args, config, run_dir / CHECKPOINT)
    save_config(config, run_dir)
    run_on_ranks(args.nproc, run_dir, args.quiet, _work, config, run_dir, not args.quiet, resume)
    return 0


def _work(config, run_dir, progress: bool, resume: bool, world) -> None:
    from nas.search import run_search

    result = run_search(config, run_dir, progress=progress and world.is_main, resume=resume, world=world)
    if not world.is_main:
        return
    last = result.history[-1]
    key = f"heldout_{_primary(result)}"
    print(f"genotype: {result.genotype_path}")
    print(f"  held-out {_primary(result)} of the argmax architecture: {last[key]:.2f}"
          f" (epoch {last['epoch']}, unchanged for {last['stable_epochs']} epoch(s))")
    print(f"next: nas retrain --genotype {result.genotype_path}")


def _primary(result) -> str:
    return next(k for k in result.genotype.metrics if k.startswith("heldout_"))[len("heldout_"):]


__all__ = ["add_parser"]
