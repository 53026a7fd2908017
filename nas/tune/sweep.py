"""A Ray Tune sweep (``nas tune``): trials of sampled genotypes retrained on a Ray cluster.

Optuna's sampler (TPE or random) is Ray Tune's search algorithm, over the
space's labelled choices (and ``train.lr`` with ``strategy.tune_lr``); the ASHA
scheduler stops weak trials at its rungs; ``FailureConfig`` restarts a trial
whose process died from its last checkpoint. Without ``strategy.address`` the
sweep starts a local Ray instance at node address 127.0.0.1; with ``auto`` or
``HOST:PORT`` it joins a cluster made by ``ray start --head`` and
``ray start --address=...``. On a cluster of several machines the run directory
must be on a filesystem they share (as Ray requires of a local storage path),
and vlnas must be installed on every node.

Ray keeps its own state in ``<out>/ray/`` (so rerunning the command restores
the sweep, trials and searcher included); the trials train in
``<out>/trials/<trial id>/``; the outputs are ``<out>/trials.jsonl``, the best
genotype as ``<out>/genotype.json`` and the ``strategy.keep_best`` best as
``<out>/best/<rank>-<trial id>.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.config import RunConfig
from nas.errors import UserError
from nas.features import default_cache_dir
from nas.multitrial import LR_PARAM, MAY_DIFFER, check_run_dir
from nas.registry import SPACES, TASKS
from nas.run import save_config
from nas.tune.outputs import TrialRecord, collect_trials, write_outputs

__all__ = ["run_sweep", "SweepResult", "check_settings", "EXPERIMENT"]

log = logging.getLogger("nas.tune")

EXPERIMENT = "ray"  # Ray's experiment folder under the run directory
SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("tpe", "random")
# Budgets, machines and paths may change when a sweep is resumed; nothing that decides what a trial trains.
_MAY_DIFFER = MAY_DIFFER | {"strategy.address", "strategy.concurrency", "strategy.max_failures",
                            "strategy.cpus_per_trial", "strategy.gpus_per_trial", "strategy.keep_best"}


@dataclass
class SweepResult:
    run_dir: Path
    cluster: str  # how the cluster was reached and what it holds, for the user
    trials: list[TrialRecord]  # best first
    genotype_path: Path | None
    best_paths: list[Path]
    trials_path: Path


def check_settings(config: RunConfig) -> None:
    """Every ``strategy.*`` value of the ray strategy, before Ray is started."""
    s = config.strategy
    if s.name != "ray":
        raise UserError(f"strategy.name: nas tune runs the 'ray' strategy, got {s.name!r}")
    if s.scheduler not in SCHEDULERS:
        raise UserError(f"strategy.scheduler: unknown scheduler {s.scheduler!r}. Valid: {', '.join(SCHEDULERS)}")
    if s.sampler not in SAMPLERS:
        raise UserError(f"strategy.sampler: unknown sampler {s.sampler!r}. Valid: {', '.join(SAMPLERS)}")
    for key in ("trials", "trial_epochs", "grace_period", "keep_best"):
        if getattr(s, key) < 1:
            raise UserError(f"strategy.{key} must be >= 1, got {getattr(s, key)}")
    for key in ("concurrency", "max_failures", "sampler_startup_trials", "gpus_per_trial"):
        if getattr(s, key) < 0:
            raise UserError(f"strategy.{key} must be >= 0, got {getattr(s, key)}")
    if s.cpus_per_trial <= 0:
        raise UserError(f"strategy.cpus_per_trial must be > 0, got {s.cpus_per_trial}")
    if s.reduction_factor < 2:
        raise UserError(f"strategy.reduction_factor must be >= 2, got {s.reduction_factor}")
    if s.grace_period > s.trial_epochs:
        raise UserError(f"strategy.grace_period ({s.grace_period}) exceeds strategy.trial_epochs ({s.trial_epochs})")
    if s.tune_lr and not (len(s.lr_range) == 2 and 0 < s.lr_range[0] < s.lr_range[1]):
        raise UserError(f"strategy.lr_range must be [low, high] with 0 < low < high, got {s.lr_range}")
    if getattr(config.task, "eval_split", None) in (None, "", "none"):
        raise UserError("task.eval_split: every trial is scored on the eval split; "
                        f"got {getattr(config.task, 'eval_split', None)!r}")


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """Workers run in Ray's own folders (and maybe under another environment): give them absolute
    data and cache paths, the cache being the one this process would use."""
    task = config.task
    updates: dict[str, Any] = {}
    if hasattr(task, "cache_dir"):
        updates["cache_dir"] = str(Path(task.cache_dir or default_cache_dir()).expanduser().resolve())
    if getattr(task, "data_dir", None):
        updates["data_dir"] = str(Path(task.data_dir).expanduser().resolve())
    return dataclasses.replace(config, task=dataclasses.replace(task, **updates)) if updates else config


class DefineByRun:
    """Optuna's define-by-run space for Ray's OptunaSearch: one categorical per label (Ray nests
    ``enc/0`` as ``{"enc": {"0": ...}}``; the trial flattens it back), plus the learning rate."""

    def __init__(self, choices: dict[str, list[str]], lr_range: list[float] | None) -> None:
        self.choices, self.lr_range = choices, lr_range

    def __call__(self, trial: Any) -> None:
        for label, candidates in self.choices.items():
            trial.suggest_categorical(label, candidates)
        if self.lr_range:
            trial.suggest_float(LR_PARAM, self.lr_range[0], self.lr_range[1], log=True)


def run_sweep(config: RunConfig, run_dir: Path, quiet: bool = False) -> SweepResult:
    check_settings(config)
    # Tune warns at every few checkpoints that snapshotting its state often may be slow; a trial
    # checkpoints once per epoch, which is what it should do.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter at verbose=0 prints nothing
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import ray  # the extra [tune]; imported here so the rest of vlnas never needs it
    from ray import tune

    config = with_absolute_paths(config)
    run_dir = run_dir.resolve()
    check_run_dir(config, run_dir, _MAY_DIFFER)
    save_config(config, run_dir)
    settings = config.strategy
    primary = TASKS.get(config.task.name).primary_metric
    cluster = connect(settings.address)
    try:
        prepare_data(config, quiet)
        trainable = _trainable(config, run_dir)
        experiment = run_dir / EXPERIMENT
        if tune.Tuner.can_restore(str(experiment)):
            log.info("%s holds this sweep: restoring it (finished trials are kept, the others continue)",
                     experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = _new_tuner(config, run_dir, trainable, primary, quiet)
        tuner.fit()
    finally:
        ray.shutdown()
    trials = collect_trials(run_dir, config, primary)
    genotype_path, best_paths = write_outputs(run_dir, config, trials, primary)
    return SweepResult(run_dir, cluster, trials, genotype_path, best_paths, run_dir / "trials.jsonl")


def prepare_data(config: RunConfig, quiet: bool) -> None:
    """Generate the built-in data and build feature caches once, here, before trials start: trials
    starting together on one machine would otherwise all build them at the same time."""
    task_config = config.task
    wanted = [s for s in dict.fromkeys([task_config.train_split, task_config.eval_split]) if s]
    with tempfile.TemporaryDirectory(prefix="vlnas-tune-") as scratch:  # the task's vocabulary files go here
        TASKS.get(task_config.name)(task_config, Path(scratch), not quiet).prepare(wanted)


def connect(address: str | None) -> str:
    """Join the cluster at ``address``, or start a local Ray instance on 127.0.0.1; describe it."""
    import ray

    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = f"at {address}" if address else "on this machine"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--address: cannot reach a Ray cluster {where}: {first} (start one with "
                        "'ray start --head', or leave --address out to start a local instance)") from None
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = ray.cluster_resources()
    shown = f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"
    kind = f"joined the Ray cluster at {address}" if address else "started a local Ray instance"
    log.info("%s: %s", kind, shown)
    return f"{kind}: {shown}"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Ray retries an unreachable address for minutes; a plain TCP connect tells in seconds."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address: expected auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise UserError(f"--address: cannot reach a Ray cluster at {address}: {error.strerror or error} (start one "
                        "with 'ray start --head', or leave --address out to start a local instance)") from None


def _trainable(config: RunConfig, run_dir: Path) -> Any:
    from ray import tune

    from nas.tune.trial import run_trial

    resources = {"cpu": config.strategy.cpus_per_trial, "gpu": config.strategy.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, config=config, out=str(run_dir)), resources)


def _new_tuner(config: RunConfig, run_dir: Path, trainable: Any, primary: str, quiet: bool) -> Any:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    settings = config.strategy
    space = SPACES.get(config.space.name)(config.space)
    sampler = (optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=settings.sampler_startup_trials)
               if settings.sampler == "tpe" else optuna.samplers.RandomSampler(seed=config.seed))
    searcher = OptunaSearch(space=DefineByRun(space.choices(), settings.lr_range if settings.tune_lr else None),
                            sampler=sampler, metric=primary, mode="max")
    scheduler = (ASHAScheduler(time_attr="epoch", metric=primary, mode="max", max_t=settings.trial_epochs, grace_period=settings.grace_period,
                               reduction_factor=settings.reduction_factor)
                 if settings.scheduler == "asha" else None)
    from nas.tune.progress import TrialLines

    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=settings.trials,
                                    max_concurrent_trials=settings.concurrency or None),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(run_dir), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  callbacks=[TrialLines(primary, settings.trials, quiet)]))
