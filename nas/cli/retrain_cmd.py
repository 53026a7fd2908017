"""``nas retrain``: train a genotype as a fixed network and write the results file."""

from __future__ import annotations

import argparse
import logging

from nas.cli.common import (add_run_arguments, config_layers, resume_dir, resume_layers, run_on_ranks,
                            should_resume)
from nas.checkpoint import load_checkpoint
from nas.config import Layer, resolve_config
from nas.errors import UserError
from nas.genotype import Genotype, genotype_from_dict, load_genotype
from nas.registry import SPACES
from nas.run import run_folder, save_config, setup_logging

log = logging.getLogger("nas")

HELP = """Train a searched architecture (a genotype JSON) from scratch.

The network is built from the genotype alone: only the chosen op at each
block. Defaults follow MmNas's VQA recipe (H=512, Adam lr 1.2e-4 with 3 warm-up
epochs, x0.2 decay after epochs 10 and 12, 13 epochs, gradient clipping 1.0).
Depth (block counts) always comes from the genotype.

Writes to the run directory: checkpoints/last.pt and best.pt, metrics.jsonl,
results/<task>_<test split>_results.json (for the evaluation server),
summary.json, config.yaml and log.txt.

examples:
  nas retrain --genotype genotypes/mmnas_vqa.json --config smoke
  nas retrain --genotype runs/qs/genotype.json --config quickstart train.epochs=8
  nas retrain --out runs/qs-train --resume train.epochs=12
  nas retrain --genotype genotypes/mmnas_vqa.json --config smoke --nproc 2
  torchrun --nproc-per-node 4 -m nas retrain --genotype genotypes/mmnas_vqa.json

With --nproc N (or torchrun), each process trains on its share of every batch:
train.batch_size is per process, so the optimizer step sees N times as many
samples. Rerunning a command whose --out holds a checkpoint resumes it.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("retrain", help="train a genotype as a fixed network",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_genotype_argument(parser)
    parser.add_argument("--task", help="task to train on (default: the genotype's task)")
    add_init_argument(parser)
    add_run_arguments(parser)
    parser.set_defaults(handler=run)


def add_genotype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--genotype", metavar="FILE",
                        help="genotype JSON (from nas search or genotypes/); required unless --resume, which "
                             "takes the genotype saved in --out's checkpoint")


def run_genotype(args: argparse.Namespace) -> tuple[Genotype, str]:
    """The genotype to train and where it came from: ``--genotype``, or on ``--resume`` without it, the
    one saved in the run's last checkpoint."""
    if args.genotype is not None:
        return load_genotype(args.genotype), str(args.genotype)
    if not args.resume:
        raise UserError("--genotype FILE is required (e.g. genotypes/mmnas_vqa.json); only --resume may leave it "
                        "out")
    from nas.retrain import LAST

    checkpoint = resume_dir(args) / LAST
    # mmap: only the small genotype entry is read here; the resume loads the tensors.
    state = load_checkpoint(checkpoint, require=("genotype",), mmap=True)
    return genotype_from_dict(state["genotype"], f"{checkpoint} (genotype)"), str(checkpoint)


def add_init_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start from the embedding, backbone and head pooling weights of a checkpoint of the "
                             "same genotype and space settings, e.g. a 'nas pretrain' run's checkpoints/best.pt "
                             "(sets train.init; word rows are matched by token, answer rows by answer; other "
                             "output layers start fresh)")


def run(args: argparse.Namespace, command: str = "retrain") -> int:
    from nas.retrain import LAST

    genotype, source = run_genotype(args)
    depth = Layer(f"{source} (depth)", {"space": {"name": genotype.space,
                  **SPACES.get(genotype.space).config_from_choices(genotype.choices)}})
    if args.resume:
        layers = resume_layers(args, command)
    else:
        defaults = {"task": {"name": genotype.task}, "space": {"name": genotype.space}, "strategy": {"name": "mmnas"}}
        layers = config_layers(args, defaults, after_files=depth)
    if getattr(args, "init", None) is not None:  # below the dotted overrides, which come last
        layers.insert(len(layers) - 1, Layer("--init", {"train": {"init": args.init}}))
    config = resolve_config(layers)
    with run_folder(args.out, command, config.task.name) as run_dir:
        setup_logging(run_dir, args.quiet)
        resume = should_resume(args, config, run_dir / LAST)
        save_config(config, run_dir)
        run_on_ranks(args.nproc, run_dir, args.quiet, _work, config, genotype.to_dict(), run_dir, not args.quiet,
                     resume, source)
    return 0


def _work(config, genotype: dict, run_dir, progress: bool, resume: bool, source: str, world) -> None:
    from nas.genotype import genotype_from_dict
    from nas.retrain import run_retrain

    result = run_retrain(config, genotype_from_dict(genotype, source), run_dir, progress=progress and world.is_main,
                         resume=resume, genotype_source=source, world=world)
    if world.is_main:
        _print_summary(result)


def _print_summary(result) -> None:
    metrics, baseline, key = result.metrics, result.baseline, result.primary_metric
    if metrics:
        print(f"validation {key}: {metrics[key]:.2f}")
        if baseline and key in baseline:
            rule = baseline.get("rule") or f"majority answer '{baseline.get('answer')}'"
            print(f"  baseline ({rule}): {baseline[key]:.2f}")
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float) and k != key}
        if scalars:
            print("  " + "  ".join(f"{k}={v:.2f}" for k, v in scalars.items()))
        for group in ("per_answer_type", "per_family"):
            if group in metrics:
                print(f"  {group.replace('_', ' ')}:")
                for name, value in metrics[group].items():
                    base = baseline.get(group, {}).get(name) if baseline else None
                    shown = f"   (baseline {base:.2f})" if base is not None else ""
                    print(f"    {name:<20} {value:6.2f}{shown}")
    if result.test_metrics:
        print(f"{result.test_split} {key}: {result.test_metrics[key]:.2f}")
    print(f"checkpoints: {result.run_dir / 'checkpoints'}")
    if result.results_path:
        print(f"results file: {result.results_path}")
    print(f"summary: {result.summary_path}")
