"""Multi-trial search with Optuna: each trial trains one sampled architecture briefly.

A trial samples a genotype define-by-run from the space's labelled choices
(``trial.suggest_categorical(label, candidates)``), optionally a learning rate,
and trains that fixed network for ``strategy.trial_epochs`` epochs with the one
retrain loop (``nas.retrain.run_retrain``) in ``<run dir>/trials/<number>/``.
Each epoch's validation metric is reported to the trial so the pruner can stop
it; the checkpoint of that epoch is already written when it is stopped.

The study lives in its storage (a journal file in the run directory unless
``strategy.storage`` names another), so rerunning the command resumes it, and
several processes may share one study. A process records who runs each trial
(host, process id and start time) and a heartbeat; at start and before every
trial, RUNNING trials whose process is dead (same machine) or whose heartbeat
is older than ``strategy.grace_period`` (any machine) are marked FAIL and
retried once or twice as new trials with the same parameters, resuming from the
dead trial's last checkpoint. Optuna's own heartbeat exists only for RDB
storages, so this one mechanism serves journal and RDB storages alike.

Outputs, rewritten after every trial from the study itself (so they agree
whichever process wrote them last): ``genotype.json`` (the best trial),
``trials.jsonl`` (every finished trial) and, with several objectives, the Pareto
front as ``pareto/<trial>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
import torch
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nas.checkpoint import load_checkpoint
from nas.config import RunConfig, config_to_dict, flatten_dict, yaml_layer
from nas.data import make_eval_loader, move_batch
from nas.errors import UserError
from nas.genotype import Genotype, save_genotype
from nas.io import atomic_write_jsonl
from nas.registry import SPACES, TASKS
from nas.retrain import LAST, run_retrain
from nas.run import provenance, save_config
from nas.space import fixed_block_factory
from nas.training import DivergenceError, count_parameters, resolve_device, resolve_precision

__all__ = ["run_multitrial_search", "MultiTrialResult", "Objective", "resolve_objectives", "check_settings",
           "open_storage", "PerTrialSeededSampler", "make_sampler", "make_pruner", "process_identity",
           "sweep_dead_trials", "trial_config", "check_run_dir", "MAY_DIFFER", "measure_latency", "measure_child",
           "write_outputs", "trial_genotype",
           "JOURNAL", "LR_PARAM"]

log = logging.getLogger("nas.multitrial")

JOURNAL = "optuna.journal"
LR_PARAM = "train.lr"  # dotted like a config key, so it can never clash with a space label
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
MEASURES = ("params", "latency")
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
# Trial user attributes written by this module.
OWNER, HEARTBEAT, TRIAL_DIR = "vlnas_owner", "vlnas_heartbeat", "vlnas_dir"
RETRY_OF, RETRIES, RESUME_FROM = "vlnas_retry_of", "vlnas_retries", "vlnas_resume_from"
MAX_RETRIES = 2  # a trial killed this many times in a row is not retried again (it may be what kills it)
MAX_DIVERGED_IN_A_ROW = 3
LATENCY_WARMUP, LATENCY_RUNS = 2, 7
# Settings that may differ between processes of one study and between a run and its resumption:
# paths and machines differ, budgets grow; none changes what a trial trains or how it is scored.
MAY_DIFFER = frozenset({"strategy.trials", "strategy.timeout", "strategy.storage", "strategy.heartbeat_interval",
                         "strategy.grace_period", "train.epochs", "train.device", "train.threads",
                         "train.num_workers", "task.data_dir", "task.cache_dir"})


@dataclass(frozen=True)
class Objective:
    name: str  # the task's primary metric, "params" or "latency"
    direction: str  # maximize | minimize


@dataclass
class MultiTrialResult:
    run_dir: Path
    study_name: str
    storage: str
    objectives: list[Objective]
    genotype_path: Path | None  # None until some trial completed
    best: FrozenTrial | None
    pareto_paths: list[Path]
    counts: dict[str, int]  # trial state name -> how many the study holds
    trials_path: Path


def resolve_objectives(names: Sequence[str], primary_metric: str) -> list[Objective]:
    """``strategy.objectives`` as Optuna directions: the task's metric first, then measures."""
    if not names:
        raise UserError("strategy.objectives: empty; give the task's metric first, e.g. [metric] or [metric, params]")
    first = names[0]
    if first not in ("metric", primary_metric):
        raise UserError(f"strategy.objectives: the first objective must be the task's metric "
                        f"('metric' or '{primary_metric}'), got {first!r}")
    objectives = [Objective(primary_metric, "maximize")]
    for name in names[1:]:
        if name not in MEASURES:
            raise UserError(f"strategy.objectives: unknown objective {name!r} after the metric. "
                            f"Valid: {', '.join(MEASURES)}")
        if any(o.name == name for o in objectives):
            raise UserError(f"strategy.objectives: {name!r} is given twice")
        objectives.append(Objective(name, "minimize"))
    return objectives


def check_settings(config: RunConfig) -> list[Objective]:
    """Every ``strategy.*`` value, before any data is read; returns the objectives."""
    s = config.strategy
    if s.sampler not in SAMPLERS:
        raise UserError(f"strategy.sampler: unknown sampler {s.sampler!r}. Valid: {', '.join(SAMPLERS)}")
    if s.pruner not in PRUNERS:
        raise UserError(f"strategy.pruner: unknown pruner {s.pruner!r}. Valid: {', '.join(PRUNERS)}")
    for key in ("trials", "trial_epochs", "heartbeat_interval", "grace_period"):
        if getattr(s, key) < 1:
            raise UserError(f"strategy.{key} must be >= 1, got {getattr(s, key)}")
    for key in ("sampler_startup_trials", "pruner_startup_trials"):
        if getattr(s, key) < 0:
            raise UserError(f"strategy.{key} must be >= 0, got {getattr(s, key)}")
    if s.timeout is not None and s.timeout <= 0:
        raise UserError(f"strategy.timeout must be a positive number of seconds, got {s.timeout}")
    if s.tune_lr and not (len(s.lr_range) == 2 and 0 < s.lr_range[0] < s.lr_range[1]):
        raise UserError(f"strategy.lr_range must be [low, high] with 0 < low < high, got {s.lr_range}")
    if getattr(config.task, "eval_split", None) in (None, "", "none"):
        raise UserError("task.eval_split: the optuna strategy scores each trial on the eval split; "
                        f"got {getattr(config.task, 'eval_split', None)!r}")
    return resolve_objectives(s.objectives, TASKS.get(config.task.name).primary_metric)


# ----------------------------------------------------------------------------- storage, sampler, pruner


def open_storage(url: str | None, run_dir: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """The study's storage and how to show it: a journal file by default (a path), or an RDB URL."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not url:
        path = run_dir / JOURNAL
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    if "://" not in url:
        path = Path(url)
        if not path.parent.is_dir():
            raise UserError(f"strategy.storage: folder {path.parent} of journal file '{url}' not found")
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in _RDB_SCHEMES:
        raise UserError(f"strategy.storage: unknown scheme '{scheme}' in '{url}'. Use a journal file path "
                        f"or a {', '.join(s + '://' for s in _RDB_SCHEMES)} URL")
    try:
        return optuna.storages.RDBStorage(url), url
    except Exception as error:  # sqlalchemy's errors: bad URL, missing driver, unreachable server
        raise UserError(f"strategy.storage: cannot open '{url}': {str(error).splitlines()[0]}") from None


class PerTrialSeededSampler(BaseSampler):
    """Delegates each trial to a fresh sampler seeded from (seed, trial number).

    A seeded Optuna sampler replays its random stream from the start in every new
    process, so a resumed search (or a second worker) would re-suggest the first
    trials' architectures. Seeding per trial number makes a trial's suggestions
    depend only on the seed, its number and the finished trials: the same in an
    interrupted and an uninterrupted run, and different between workers.
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make((self._seed * 1_000_003 + trial.number) % 2**32)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)


def make_sampler(sampler: str, seed: int, startup_trials: int = 10) -> BaseSampler:
    if sampler == "tpe":
        return PerTrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=startup_trials),
                                     seed)
    if sampler == "random":
        return PerTrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    raise UserError(f"strategy.sampler: unknown sampler {sampler!r}. Valid: {', '.join(SAMPLERS)}")


def make_pruner(pruner: str, trial_epochs: int, startup_trials: int = 5) -> optuna.pruners.BasePruner:
    """Steps are epochs trained (1, 2, ...), so a resource of 1 is one epoch."""
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=trial_epochs, reduction_factor=3)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"strategy.pruner: unknown pruner {pruner!r}. Valid: {', '.join(PRUNERS)}")


# ----------------------------------------------------------------------------- dead trials


def process_identity() -> dict[str, Any]:
    """Who runs a trial: enough to tell, on the same machine, whether that process still lives."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "start": stat[1] if stat else None}


def _pid_namespace() -> str | None:
    # Containers on one host may share a hostname but not process ids.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, where /proc exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[0], fields[19]


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the process id exists, which is all we can tell
    state, started = stat
    if state in ("Z", "X"):  # killed, not yet reaped
        return False
    return start is None or started == start  # another start time: the id was reused


def _why_dead(trial: FrozenTrial, me: Mapping[str, Any], grace_period: float, now: float) -> str | None:
    """Why the process running ``trial`` is taken for dead, or None while it may live."""
    owner = trial.user_attrs.get(OWNER)
    who = f"process {owner.get('pid')} on {owner.get('host')}" if isinstance(owner, dict) else "its process"
    if isinstance(owner, dict) and owner.get("host") == me["host"] and owner.get("pidns") == me["pidns"]:
        return None if _process_alive(int(owner["pid"]), owner.get("start")) else f"{who} died running it"
    beat = trial.user_attrs.get(HEARTBEAT)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()  # naive local time, as Optuna stores it
    if beat is None or now - float(beat) < grace_period:
        return None
    return f"{who} sent no heartbeat for {now - float(beat):.0f}s (strategy.grace_period={grace_period:g})"


def sweep_dead_trials(study: optuna.Study, grace_period: float) -> list[int]:
    """Mark RUNNING trials whose process is gone as FAIL, and queue a retry of each.

    Returns the numbers of the trials marked. Another process sweeping at the same
    time fails to mark the same trial (Optuna refuses to finish a trial twice), so
    each dead trial is retried once.
    """
    me, now, marked = process_identity(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = _why_dead(trial, me, grace_period, now)
        if why is None:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile, or another process marked it first
        marked.append(trial.number)
        _queue_retry(study, trial, why)
    return marked


def _queue_retry(study: optuna.Study, trial: FrozenTrial, why: str) -> None:
    """Queue a new trial with a FAILed trial's parameters that resumes from its checkpoint
    (what Optuna's RetryFailedTrialCallback does for RDB heartbeats, plus the weights)."""
    retries = int(trial.user_attrs.get(RETRIES, 0))
    if retries >= MAX_RETRIES:
        log.warning("trial %d: %s; marked FAIL, not retried (its parameters were already retried %d times)",
                    trial.number, why, retries)
        return
    attrs = {RETRY_OF: trial.number, RETRIES: retries + 1}
    if trial.user_attrs.get(TRIAL_DIR):
        attrs[RESUME_FROM] = trial.user_attrs[TRIAL_DIR]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    log.info("trial %d: %s; marked FAIL and queued a retry of its parameters (resuming from its last "
             "checkpoint)", trial.number, why)


class _Heartbeat:
    """Writes the time into the trial every ``interval`` seconds while it runs."""

    def __init__(self, trial: optuna.Trial, interval: float) -> None:
        self._trial, self._interval = trial, interval
        self._stop = threading.Event()
        trial.set_user_attr(HEARTBEAT, time.time())
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial.number}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._trial.set_user_attr(HEARTBEAT, time.time())
            except Exception as error:  # a storage hiccup must not kill the training thread
                log.warning("trial %d: heartbeat not written: %s", self._trial.number, error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- one trial


def trial_config(config: RunConfig, choices: Mapping[str, str], lr: float) -> RunConfig:
    """The run config of one trial, built fresh from the search's: the space's depth implied by the
    choices, ``trial_epochs`` epochs, the trial's learning rate, and no test-split prediction."""
    space = dataclasses.replace(config.space, **SPACES.get(config.space.name).config_from_choices(choices))
    task = dataclasses.replace(config.task, test_split="none") if hasattr(config.task, "test_split") else config.task
    train = dataclasses.replace(config.train, epochs=config.strategy.trial_epochs, lr=lr)
    return dataclasses.replace(config, task=task, space=space, train=train)


def measure_latency(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                    dtype: torch.dtype = torch.float32) -> float:
    """Median milliseconds of an inference forward pass on ``batch`` (after warm-up runs)."""
    autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.eval()
    times = []
    with torch.inference_mode(), autocast:
        for run in range(LATENCY_WARMUP + LATENCY_RUNS):
            synchronize()
            start = time.perf_counter()
            model(batch)
            synchronize()
            if run >= LATENCY_WARMUP:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def measure_child(config: RunConfig, choices: Mapping[str, str], trial_dir: Path, latency: bool) -> dict[str, Any]:
    """Parameter count (and latency) of the trained child network, rebuilt from its checkpoint."""
    device = resolve_device(config.train.device)
    task = TASKS.get(config.task.name)(config.task, trial_dir, False)
    space = SPACES.get(config.space.name)(config.space)
    eval_split = config.task.eval_split
    data = task.prepare([eval_split])
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta),
                              fixed_block_factory(choices)).to(device)
    model.load_state_dict(load_checkpoint(trial_dir / LAST, map_location=device)["model"])
    found: dict[str, Any] = {"params": count_parameters(model)}
    if latency:
        loader = make_eval_loader(task.evaluation_view(data.splits[eval_split]), config.train.eval_batch_size)
        batch = move_batch(next(iter(loader)), device)
        found["latency_ms"] = round(measure_latency(model, batch, device,
                                                    resolve_precision(config.train.precision, device)), 4)
        found["latency_batch"] = int(next(iter(batch.values())).shape[0])
    return found


class _Trial:
    """One trial: sample, train through the retrain loop, measure, return the objective values."""

    def __init__(self, trial: optuna.Trial, config: RunConfig, run_dir: Path, objectives: list[Objective],
                 progress: bool) -> None:
        self.trial, self.config, self.objectives = trial, config, objectives
        self.dir = run_dir / "trials" / str(trial.number)
        self.progress = progress
        self.primary = objectives[0].name
        self.pruning = len(objectives) == 1  # Optuna cannot prune multi-objective trials

    def run(self) -> list[float]:
        trial, config, settings = self.trial, self.config, self.config.strategy
        space = SPACES.get(config.space.name)(config.space)
        choices = {label: trial.suggest_categorical(label, candidates) for label, candidates in space.choices().items()}
        lr = (trial.suggest_float(LR_PARAM, settings.lr_range[0], settings.lr_range[1], log=True)
              if settings.tune_lr else config.train.lr)
        run_config = trial_config(config, choices, lr)
        genotype = Genotype(space=space.name, task=config.task.name, choices=choices,
                            provenance=provenance(config, strategy="optuna", trial=trial.number))
        resume = self._inherit(settings.trial_epochs)
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(run_config, self.dir)
        log.info("trial %d: %s%s", trial.number, space.describe(choices),
                 f", lr {lr:.3g}" if settings.tune_lr else "")
        result = run_retrain(run_config, genotype, self.dir, progress=self.progress, resume=resume,
                             genotype_source=f"trial {trial.number}", on_epoch=self._on_epoch)
        values = [float(result.metrics[self.primary])]
        wanted = {o.name for o in self.objectives[1:]}
        if wanted:
            measured = measure_child(run_config, choices, self.dir, latency="latency" in wanted)
            for key, value in measured.items():
                trial.set_user_attr(key, value)
            values += [float(measured["params"] if o.name == "params" else measured["latency_ms"])
                       for o in self.objectives[1:]]
        return values

    def _on_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        value = float(record["metrics"][self.primary])
        self.trial.set_user_attr(f"epoch_{epoch}", value)  # multi-objective studies take no intermediate values
        if not self.pruning:
            return
        self.trial.report(value, epoch)
        # A trial whose last epoch is done is complete: pruning it then would only lose its result.
        if epoch < self.config.strategy.trial_epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"after epoch {epoch} ({self.primary} {value:.2f})")

    def _inherit(self, epochs: int) -> bool:
        """For a retry of a killed trial: continue from its last checkpoint, re-reporting its epochs."""
        source = self.trial.user_attrs.get(RESUME_FROM)
        self.trial.set_user_attr(TRIAL_DIR, str(self.dir.resolve()))
        if not source or not (Path(source) / LAST).is_file() or Path(source).resolve() == self.dir.resolve():
            return False
        if self.dir.exists():
            shutil.rmtree(self.dir)  # left by an earlier study of the same name: not this trial's
        shutil.copytree(source, self.dir)
        state = load_checkpoint(self.dir / LAST)
        # A trial that finished training but died before telling resumes too: the retrain loop then
        # trains nothing and writes its final files.
        for record in state["history"]:
            self._on_epoch(record["epoch"], record)
        log.info("trial %d: retry of trial %s, resuming from %s (epoch %d)", self.trial.number,
                 self.trial.user_attrs.get(RETRY_OF), Path(source) / LAST, state["epoch"])
        return True


# ----------------------------------------------------------------------------- the search


def run_multitrial_search(config: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
                          pruner: optuna.pruners.BasePruner | None = None) -> MultiTrialResult:
    """Run trials until the study holds ``strategy.trials`` COMPLETE + PRUNED ones (or the timeout).

    ``pruner`` replaces the one ``strategy.pruner`` names (for the Python API and tests).
    """
    settings = config.strategy
    objectives = check_settings(config)
    check_run_dir(config, run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here instead
    storage, where = open_storage(settings.storage, run_dir)
    study_name = settings.study_name or f"vlnas-{config.task.name}-{config.space.name}"
    exists = study_name in optuna.study.get_all_study_names(storage)
    if resume and not exists:
        raise UserError(f"{where}: holds no study '{study_name}' to resume (strategy.study_name)")
    multi = len(objectives) > 1
    if pruner is None:
        if multi and settings.pruner != "none":
            log.info("pruning is off: Optuna cannot prune multi-objective studies (strategy.pruner=%s ignored)",
                     settings.pruner)
        pruner = make_pruner("none" if multi else settings.pruner, settings.trial_epochs,
                             settings.pruner_startup_trials)
    sampler = make_sampler(settings.sampler, config.seed, settings.sampler_startup_trials)
    if exists:  # load, not create(load_if_exists): that would append a refused creation to the journal
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    else:  # load_if_exists: another process may create it at the same moment
        study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, pruner=pruner,
                                    sampler=sampler, directions=[o.direction for o in objectives])
    _check_study(study, config, objectives, where)
    save_config(config, run_dir)

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    log.info("optuna search: study '%s' in %s (%d of %d trials finished), sampler %s, pruner %s, objectives %s, "
             "%d epoch(s) per trial", study_name, where, done, settings.trials, settings.sampler,
             type(pruner).__name__, ", ".join(f"{o.name} ({o.direction})" for o in objectives),
             settings.trial_epochs)
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    diverged = 0
    while True:
        sweep_dead_trials(study, settings.grace_period)
        done = len(study.get_trials(deepcopy=False, states=finished))
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if done + running >= settings.trials:
            if running:
                log.info("%d trial(s) still running in other processes", running)
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.info("strategy.timeout (%gs) reached: no new trial started", settings.timeout)
            break
        number, state, error = _run_one(study, config, run_dir, objectives, progress)
        diverged = diverged + 1 if isinstance(error, DivergenceError) else 0
        outputs = write_outputs(study, config, run_dir, objectives)
        log.info("%s", _progress_line(study, number, state, error, objectives, settings.trials, outputs))
        if diverged >= MAX_DIVERGED_IN_A_ROW:
            raise UserError(f"{diverged} trials in a row diverged (last: trial {number}: {error}); "
                            f"lower train.lr or strategy.lr_range")
    genotype_path, best, pareto = write_outputs(study, config, run_dir, objectives)
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return MultiTrialResult(run_dir=run_dir, study_name=study_name, storage=where, objectives=objectives,
                            genotype_path=genotype_path, best=best, pareto_paths=pareto, counts=counts,
                            trials_path=run_dir / "trials.jsonl")


def _run_one(study: optuna.Study, config: RunConfig, run_dir: Path, objectives: list[Objective],
             progress: bool) -> tuple[int, TrialState, BaseException | None]:
    """Ask, run and tell one trial (ask-and-tell: the failures are reported here, not by Optuna)."""
    trial = study.ask()
    trial.set_user_attr(OWNER, process_identity())
    heartbeat = _Heartbeat(trial, config.strategy.heartbeat_interval)
    values, state, error = None, TrialState.COMPLETE, None
    try:
        values = _Trial(trial, config, run_dir, objectives, progress).run()
    except optuna.TrialPruned as pruned:
        state, error = TrialState.PRUNED, pruned
    except DivergenceError as diverged:  # this architecture or learning rate diverges: try another
        state, error = TrialState.FAIL, diverged
        trial.set_user_attr("error", str(diverged))
    except BaseException as stopped:  # a mistake, a bug or Ctrl-C: the search stops with it
        heartbeat.stop()
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if isinstance(stopped, KeyboardInterrupt):  # like a killed process: the rerun continues this trial
            _queue_retry(study, _frozen(study, trial.number), "interrupted")
        raise
    heartbeat.stop()
    study.tell(trial, values if state == TrialState.COMPLETE else None,
               state=None if state == TrialState.COMPLETE else state, skip_if_finished=True)
    final = _frozen(study, trial.number).state
    if final != state:
        log.warning("trial %d was marked %s by another process while it ran (its heartbeat stopped for longer "
                    "than strategy.grace_period?)", trial.number, final.name)
    return trial.number, final, error


# ----------------------------------------------------------------------------- outputs


def write_outputs(study: optuna.Study, config: RunConfig, run_dir: Path, objectives: list[Objective]
                  ) -> tuple[Path | None, FrozenTrial | None, list[Path]]:
    """``trials.jsonl``, ``genotype.json`` of the best trial and the Pareto front, from the study."""
    labels = list(SPACES.get(config.space.name)(config.space).choices())
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                             TrialState.FAIL)), key=lambda t: t.number)
    atomic_write_jsonl(run_dir / "trials.jsonl", [_trial_record(t, labels, objectives) for t in trials])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None, None, []
    front = study.best_trials if len(objectives) > 1 else [study.best_trial]
    # The best trial: highest metric on the front (ties: the earliest).
    best = max(front, key=lambda t: (t.values[0], -t.number))
    genotype_path = run_dir / "genotype.json"
    save_genotype(trial_genotype(best, config, labels, objectives, study.study_name), genotype_path)
    pareto: list[Path] = []
    if len(objectives) > 1:
        folder = run_dir / "pareto"
        folder.mkdir(exist_ok=True)
        for trial in sorted(front, key=lambda t: t.number):
            pareto.append(save_genotype(trial_genotype(trial, config, labels, objectives, study.study_name),
                                        folder / f"{trial.number}.json"))
        for stale in set(folder.glob("*.json")) - set(pareto):  # trials a later one now dominates
            stale.unlink()
    return genotype_path, best, pareto


def trial_genotype(trial: FrozenTrial, config: RunConfig, labels: list[str], objectives: list[Objective],
                   study_name: str) -> Genotype:
    eval_split = config.task.eval_split
    metrics: dict[str, Any] = {f"{eval_split}_{objectives[0].name}": trial.values[0], "eval_split": eval_split}
    for key in ("params", "latency_ms", "latency_batch"):
        if key in trial.user_attrs:
            metrics[key] = trial.user_attrs[key]
    extra = {"hyperparameters": {LR_PARAM: trial.params[LR_PARAM]}} if LR_PARAM in trial.params else {}
    return Genotype(space=config.space.name, task=config.task.name,
                    choices={label: trial.params[label] for label in labels},
                    provenance=provenance(config, strategy="optuna", trial=trial.number, study=study_name,
                                          trial_epochs=config.strategy.trial_epochs, **extra),
                    metrics=metrics)


def _trial_record(trial: FrozenTrial, labels: list[str], objectives: list[Objective]) -> dict[str, Any]:
    attrs = trial.user_attrs
    epochs = sorted((int(k[len("epoch_"):]), v) for k, v in attrs.items() if k.startswith("epoch_"))
    duration = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    record = {"number": trial.number, "state": trial.state.name, "params": trial.params,
              "values": trial.values,
              "objectives": dict(zip([o.name for o in objectives], trial.values)) if trial.values else None,
              "choices": {label: trial.params[label] for label in labels if label in trial.params},
              "epoch_metrics": {str(epoch): value for epoch, value in epochs},
              "duration_s": round(duration, 3) if duration is not None else None}
    for key in ("params", "latency_ms", "latency_batch", "error"):
        if key in attrs:
            record["measured_" + key if key != "error" else key] = attrs[key]
    for key, name in ((RETRY_OF, "retry_of"), (TRIAL_DIR, "dir")):
        if key in attrs:
            record[name] = attrs[key]
    return record


def _progress_line(study: optuna.Study, number: int, state: TrialState, error: BaseException | None,
                   objectives: list[Objective], total: int, outputs: tuple) -> str:
    trial = _frozen(study, number)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    head = f"trial {number} [{finished}/{total}]"
    if state == TrialState.COMPLETE:
        shown = "  ".join(_format_value(o.name, v) for o, v in zip(objectives, trial.values))
        what = f"complete: {shown}"
    elif state == TrialState.PRUNED:
        what = f"pruned {error}" if error else "pruned"
    else:
        what = f"failed: {error}" if error else "failed"
    _, best, pareto = outputs
    if best is None:
        tail = "no trial complete yet"
    elif len(objectives) > 1:
        tail = f"Pareto front: trial(s) {', '.join(p.stem for p in pareto)}"
    else:
        tail = f"best so far: trial {best.number} {_format_value(objectives[0].name, best.values[0])}"
    return f"{head} {what} | {tail}"


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _format_value(name: str, value: float) -> str:
    if name == "params":
        return f"params={int(value):,}"
    if name == "latency":
        return f"latency={value:.2f}ms"
    return f"{name}={value:.2f}"


# ----------------------------------------------------------------------------- same study, same search


def _comparable(config: RunConfig, may_differ: frozenset[str] = MAY_DIFFER) -> dict[str, Any]:
    flat = flatten_dict(json.loads(json.dumps(config_to_dict(config), default=str)))
    return {key: value for key, value in flat.items() if key not in may_differ}


def _differing(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")


def check_run_dir(config: RunConfig, run_dir: Path, may_differ: frozenset[str] = MAY_DIFFER) -> None:
    """A run directory that holds another search (other settings, another strategy) is not reused;
    only the keys in ``may_differ`` (budgets, paths, machines) may change between runs of one search."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = dict(yaml_layer(saved_path).values)  # a broken file is a one-line error naming it
    old = {k: v for k, v in flatten_dict(json.loads(json.dumps(saved, default=str))).items() if k not in may_differ}
    new = _comparable(config, may_differ)
    if old != new:
        raise UserError(f"{run_dir}: already holds a run with another config (differs in {_differing(old, new)}); "
                        "continue it with --resume, or pick a new --out")


def _check_study(study: optuna.Study, config: RunConfig, objectives: list[Objective], where: str) -> None:
    """A study made by another search config is not continued with this one."""
    ours = _comparable(config)
    theirs = study.user_attrs.get("vlnas_config")
    if theirs is None:
        study.set_user_attr("vlnas_config", ours)
        return
    if theirs != ours:
        raise UserError(f"{where}: study '{study.study_name}' was made by another search config (differs in "
                        f"{_differing(theirs, ours)}); set strategy.study_name or strategy.storage to start another")
    directions = [d.name.lower() for d in study.directions]
    if directions != [o.direction for o in objectives]:
        raise UserError(f"{where}: study '{study.study_name}' has directions {directions}, strategy.objectives "
                        f"asks for {[o.direction for o in objectives]}")
