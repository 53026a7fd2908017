"""``nas search``: search an architecture and write its genotype JSON."""

from __future__ import annotations

import argparse
import logging

from nas.cli.common import (add_run_arguments, config_layers, resume_layers, run_on_ranks, should_resume,
                             without_other_strategies_keys)
from nas.config import Layer, resolve_config
from nas.errors import UserError
from nas.registry import STRATEGIES
from nas.run import run_folder, save_config, setup_logging

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

Multi-trial search with Optuna (--strategy optuna): each trial trains one
sampled architecture for strategy.trial_epochs epochs; the study is kept in
<out>/optuna.journal (or strategy.storage), so rerunning the command resumes it
and several processes may share it. Writes genotype.json (best trial),
trials.jsonl, trials/<number>/ and, with several objectives, pareto/<trial>.json.
  nas search --task vqa --strategy optuna --config smoke strategy.trials=8 strategy.trial_epochs=2
  nas search --task vqa --strategy optuna strategy.objectives=[accuracy,params] strategy.tune_lr=true

NNI 3.0's one-shot strategies (--strategy nni, needs pip install -e ".[nni]"):
strategy.algorithm=darts|gumbel|proxyless|random runs nni.nas.strategy.DARTS,
GumbelDARTS, Proxyless or RandomOneShot on the space; writes genotype.json and
nni_arch.json (NNI's exported choice dict).
  nas search --task vqa --strategy nni --config smoke strategy.algorithm=darts
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

    dropped: list[str] = []
    if args.resume:
        layers = resume_layers(args, "search")
    else:
        layers = config_layers(args, SEARCH_DEFAULTS)
        files = slice(1, 1 + len(args.config))
        layers[files], dropped = without_other_strategies_keys(layers[files], _strategy_name(layers))
    config = resolve_config(layers)
    strategy_cls = STRATEGIES.get(config.strategy.name)
    multi_trial = getattr(strategy_cls, "multi_trial", False)
    own_search = getattr(strategy_cls, "own_search", False)  # a library's search (nni), not the one-shot loop
    if multi_trial:
        _check_multi_trial(args, config)  # before the run directory is made
    if own_search:
        _check_own_search(args, strategy_cls, config)
    with run_folder(args.out, "search", config.task.name) as run_dir:
        setup_logging(run_dir, args.quiet)
        if dropped:
            log.info("ignored %s: settings of other strategies, not of %s", ", ".join(dropped), config.strategy.name)
        if multi_trial:
            return _multi_trial(args, config, run_dir)
        if own_search:
            save_config(config, run_dir)
            result = strategy_cls.run(config, run_dir, not args.quiet)
            print(f"genotype: {result.genotype_path}")
            print(f"next: nas retrain --genotype {result.genotype_path}")
            return 0
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
    print(f"  held-out {_primary(result)} of the exported architecture: {last[key]:.2f}"
          f" (epoch {last['epoch']}, unchanged for {last['stable_epochs']} epoch(s))")
    print(f"next: nas retrain --genotype {result.genotype_path}")


def _check_multi_trial(args: argparse.Namespace, config) -> None:
    from nas.distributed import world_from_env
    from nas.multitrial import check_settings

    if args.nproc > 1 or world_from_env().distributed:
        raise UserError(f"--nproc / torchrun: strategy {config.strategy.name} trains one process per trial; to run "
                        "trials in parallel, start 'nas search' again with the same --out (or strategy.storage)")
    check_settings(config)


def _check_own_search(args: argparse.Namespace, strategy_cls, config) -> None:
    from nas.distributed import world_from_env

    name = config.strategy.name
    if args.nproc > 1 or world_from_env().distributed:
        raise UserError(f"--nproc / torchrun: strategy {name} runs its library's search in one process")
    if args.resume:
        raise UserError(f"--resume: strategy {name} keeps no search checkpoint; start it again with a new --out")
    strategy_cls.check(config)


def _multi_trial(args: argparse.Namespace, config, run_dir) -> int:
    from nas.multitrial import LR_PARAM, run_multitrial_search

    result = run_multitrial_search(config, run_dir, progress=not args.quiet, resume=args.resume)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items()))
    print(f"study '{result.study_name}' in {result.storage}: {counts}; every trial in {result.trials_path}")
    if result.genotype_path is None:
        print("no trial completed, so no genotype was written")
        return 0
    best = result.best
    primary = result.objectives[0].name
    print(f"genotype: {result.genotype_path}")
    print(f"  best trial {best.number}: {config.task.eval_split} {primary} {best.values[0]:.2f}"
          f" after {config.strategy.trial_epochs} epoch(s)")
    if result.pareto_paths:
        print(f"  Pareto front ({', '.join(o.name for o in result.objectives)}): "
              f"{len(result.pareto_paths)} genotype(s) in {result.pareto_paths[0].parent}")
    lr = best.params.get(LR_PARAM)  # a tuned learning rate is the trial's, not the config's
    print(f"next: nas retrain --genotype {result.genotype_path}" + (f" train.lr={lr:.3g}" if lr else ""))
    return 0


def _strategy_name(layers: list[Layer]) -> str | None:
    name = None
    for layer in layers:
        section = layer.values.get("strategy")
        if isinstance(section, dict) and isinstance(section.get("name"), str):
            name = section["name"]
    return name


def _primary(result) -> str:
    return next(k for k in result.genotype.metrics if k.startswith("heldout_"))[len("heldout_"):]


__all__ = ["add_parser"]
