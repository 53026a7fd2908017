"""``nas tune``: a Ray Tune sweep of sampled genotypes, locally or on a Ray cluster."""

from __future__ import annotations

import argparse
import logging

from nas.cli.common import add_run_arguments, config_layers, resume_layers, without_other_strategies_keys
from nas.cli.search_cmd import SEARCH_DEFAULTS
from nas.config import Layer, resolve_config
from nas.errors import UserError
from nas.registry import TASKS
from nas.run import run_folder, setup_logging

log = logging.getLogger("nas")

TUNE_DEFAULTS = {**SEARCH_DEFAULTS, "strategy": {"name": "ray"}}  # trials retrain with the search recipe

HELP = """Run a Ray Tune sweep: each trial samples a genotype (Optuna's TPE sampler as
the search algorithm) and retrains it for strategy.trial_epochs epochs; the ASHA
scheduler stops weak trials early; a trial whose process dies is restarted from
its last checkpoint (strategy.max_failures times).

Without --address a local Ray instance is started (node address 127.0.0.1). To use
a cluster, start it with Ray's own commands and pass its address:
  ray start --head --port 6379                       # on the head machine
  ray start --address HEAD_IP:6379                   # on every other machine
  nas tune --task vqa --address HEAD_IP:6379 --out /shared/runs/sweep
On several machines --out must be on a shared filesystem and vlnas installed on
every node.

Writes to --out: trials.jsonl (every trial: choices, status, per-epoch metric,
attempts and Ray nodes), genotype.json (best trial), best/<rank>-<trial>.json,
trials/<trial>/ (each trial's retrain run) and ray/ (Ray's state: rerunning the
same command restores the sweep).

examples:
  nas tune --task vqa --config smoke --trials 8 strategy.trial_epochs=2
  nas tune --task vqa --address auto --trials 64 --concurrency 8 strategy.tune_lr=true
  nas tune --task vgd --config quickstart strategy.scheduler=fifo strategy.cpus_per_trial=2

Needs the extra: python3 -m pip install -e ".[tune]"
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune", help="Ray Tune sweep of sampled genotypes (local or on a cluster)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", help="registered task (default vqa)")
    parser.add_argument("--space", help="registered search space (default mmnas)")
    parser.add_argument("--address", metavar="auto|HOST:PORT",
                        help="join this Ray cluster (sets strategy.address); default: start a local instance")
    parser.add_argument("--trials", type=int, metavar="N", help="trials in the sweep (sets strategy.trials)")
    parser.add_argument("--concurrency", type=int, metavar="K",
                        help="trials at once (sets strategy.concurrency; default: as many as the CPUs hold)")
    add_run_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.nproc > 1:
        raise UserError("--nproc: each Ray Tune trial is one process; give trials more CPUs with "
                        "strategy.cpus_per_trial, or more trials at once with --concurrency")
    flags = {key: value for key, value in (("address", args.address), ("trials", args.trials),
                                           ("concurrency", args.concurrency)) if value is not None}
    sweep_flags = Layer("nas tune", {"strategy": {"name": "ray", **flags}})
    dropped: list[str] = []
    if args.resume:
        layers = resume_layers(args, "tune")
        layers.insert(1, sweep_flags)
    else:
        layers = config_layers(args, TUNE_DEFAULTS, after_files=sweep_flags)
        files = slice(1, 1 + len(args.config))
        layers[files], dropped = without_other_strategies_keys(layers[files], "ray")
    config = resolve_config(layers)
    try:
        from nas.tune.sweep import check_settings, run_sweep
        from nas.tune.outputs import format_table
    except ImportError as error:
        if "ray" not in str(error):
            raise
        raise UserError('nas tune needs Ray Tune: python3 -m pip install -e ".[tune]"') from None
    check_settings(config)
    with run_folder(args.out, "tune", config.task.name) as run_dir:
        setup_logging(run_dir, args.quiet)
        if not args.resume and dropped:
            log.info("ignored %s: settings of other strategies, not of ray", ", ".join(dropped))
        result = run_sweep(config, run_dir, quiet=args.quiet)
    primary = TASKS.get(config.task.name).primary_metric
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    print(f"{len(result.trials)} trial(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if result.trials:
        print(format_table(result.trials, f"{config.task.eval_split} {primary}"))
    print(f"every trial: {result.trials_path}")
    if result.genotype_path is None:
        print("no trial finished an epoch, so no genotype was written")
        return 0
    best = result.trials[0]
    print(f"genotype: {result.genotype_path} (trial {best.trial_id}); the {len(result.best_paths)} best in "
          f"{result.best_paths[0].parent}")
    lr = f" train.lr={best.lr:.3g}" if config.strategy.tune_lr else ""
    print(f"next: nas retrain --genotype {result.genotype_path}{lr}")
    return 0


__all__ = ["add_parser"]
