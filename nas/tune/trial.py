"""One Ray Tune trial: runs in a Ray worker process, on whichever node Ray placed it.

The trial's parameters (Optuna's suggestions; Ray nests labels such as
``enc/0`` into dicts, so they are flattened back) become a genotype and a run
config, and the one retrain loop trains it in ``<out>/trials/<trial id>/``.
After every epoch the validation metric goes to the scheduler together with the
epoch's checkpoint, which Ray keeps in its own storage. When the worker dies
(a killed process, a lost node) Ray starts the trial again, up to
``strategy.max_failures`` times, and hands it that checkpoint: training resumes
from the last finished epoch rather than from scratch. A worker can die between
writing an epoch's checkpoint in the trial folder and Ray registering it; the
restarted trial then resumes from whichever of the two is further along, and
first reports the epochs Ray never heard of, so no epoch is trained twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Mapping

from nas.checkpoint import load_checkpoint
from nas.config import RunConfig, flatten_dict
from nas.genotype import Genotype, save_genotype
from nas.io import atomic_write, atomic_write_json
from nas.multitrial import LR_PARAM, trial_config
from nas.registry import SPACES, TASKS
from nas.retrain import LAST, run_retrain
from nas.run import provenance, save_config, setup_logging
from nas.training import DivergenceError

__all__ = ["run_trial", "flatten_params", "trial_choices", "read_attempts", "WORKER_FILE", "TRIALS_DIR"]

log = logging.getLogger("nas.tune")

TRIALS_DIR = "trials"
WORKER_FILE = "worker.json"  # who ran each attempt of the trial (host, Ray node, process id), and how it ended


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Ray Tune's config with ``a/b`` keys nested as ``{"a": {"b": ...}}``, flattened back."""
    return flatten_dict(params, separator="/")


def trial_choices(params: Mapping[str, Any], labels: list[str], default_lr: float) -> tuple[dict[str, str], float]:
    """The genotype choices and learning rate that a trial's parameters encode."""
    flat = flatten_params(params)
    return {label: flat[label] for label in labels}, float(flat.get(LR_PARAM, default_lr))


def run_trial(params: dict[str, Any], config: RunConfig, out: str) -> None:
    """Ray Tune's function trainable (bound to the sweep's config with ``tune.with_parameters``)."""
    from ray import tune

    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_dir = Path(out) / TRIALS_DIR / trial_id
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir, quiet=True)  # this trial's log.txt; the driver prints one line per result
    space = SPACES.get(config.space.name)(config.space)
    choices, lr = trial_choices(params, list(space.choices()), config.train.lr)
    run_config = trial_config(config, choices, lr)
    if run_config.train.threads == 0:  # as many torch threads as CPUs Ray gave the trial, not the machine's
        threads = max(1, int(config.strategy.cpus_per_trial))
        run_config = dataclasses.replace(run_config, train=dataclasses.replace(run_config.train, threads=threads))
    attempt = _record_attempt(run_dir)
    resumed, reported = _restore(tune.get_checkpoint(), run_dir)
    save_config(run_config, run_dir)
    genotype = Genotype(space=space.name, task=config.task.name, choices=choices,
                        provenance=provenance(config, strategy="ray", trial=trial_id))
    save_genotype(genotype, run_dir / "genotype.json")
    primary = TASKS.get(config.task.name).primary_metric
    node_id = _node_id()

    def report(epoch: int, record: dict[str, Any]) -> None:
        metrics = {"epoch": epoch, primary: float(record["metrics"][primary]), "loss": float(record["loss"]),
                   "attempt": attempt, "node_id": node_id}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(run_dir / LAST.parent)))

    if resumed is not None:
        for record in resumed["history"][reported:]:  # finished by the dead attempt, never registered by Ray
            log.info("reporting epoch %d, which Ray did not register before the last attempt died", record["epoch"])
            report(record["epoch"], record)
        if resumed["epoch"] >= run_config.train.epochs:
            _finish_attempt(run_dir, "complete")  # it died after its last epoch: nothing is left to train
            return
    try:
        run_retrain(run_config, genotype, run_dir, progress=False, resume=resumed is not None,
                    genotype_source=f"trial {trial_id}", on_epoch=report)
    except DivergenceError as error:  # this architecture or learning rate diverges: the trial ends, the sweep goes on
        log.warning("trial %s: %s", trial_id, error)
        _finish_attempt(run_dir, "diverged", str(error))
        return
    _finish_attempt(run_dir, "complete")


def _restore(checkpoint: Any, run_dir: Path) -> tuple[dict[str, Any] | None, int]:
    """Put the furthest-along checkpoint of this trial in place; returns its contents (None: train
    from scratch) and how many epochs Ray has registered.

    Two copies can exist: Ray's, of the last epoch it registered, and the trial folder's own
    ``last.pt``, which the dead attempt may have written after that (an epoch whose report never
    reached Ray, or a mid-epoch save). The further along wins; at a tie, Ray's. A trial restarted
    on another node, with a stale folder of its own there, still gets Ray's copy. With neither,
    training starts from scratch.
    """
    own_path = run_dir / LAST
    own = _read(own_path) if own_path.is_file() else None
    if checkpoint is None:
        if own is None:
            if own_path.parent.exists():
                shutil.rmtree(own_path.parent)  # partial writes of an attempt that never checkpointed
            return None, 0
        log.info("restarted before Ray registered a checkpoint: resuming from the trial's own %s", own_path)
        return own, 0
    with checkpoint.as_directory() as saved:
        source = Path(saved) / LAST.name
        registered = _read(source)
        if own is not None and _progress(own) > _progress(registered):
            log.info("kept the trial's own %s: it is further along than Ray's checkpoint (epoch %d)",
                     own_path, registered["epoch"])
            return own, registered["epoch"]
        if own_path.parent.exists():
            shutil.rmtree(own_path.parent)
        atomic_write(own_path, lambda tmp: shutil.copyfile(source, tmp))
    log.info("restored %s from Ray's checkpoint of the last reported epoch", own_path)
    return registered, registered["epoch"]


def _read(path: Path) -> dict[str, Any]:
    return load_checkpoint(path, require=("epoch", "history"))


def _progress(state: dict[str, Any]) -> tuple[int, int]:
    """How far a checkpoint is: (finished epochs, steps into the next one)."""
    return int(state["epoch"]), int((state.get("progress") or {}).get("steps", 0))


def _node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside a Ray worker (never in a sweep)
        return None


def _record_attempt(run_dir: Path) -> int:
    """Append this attempt to ``worker.json``; returns its number (1 for the first)."""
    record = read_attempts(run_dir) or {"attempts": []}
    record["attempts"].append({"host": socket.gethostname(), "node_id": _node_id(), "pid": os.getpid(),
                               "started": time.time(), "ended": None})
    atomic_write_json(run_dir / WORKER_FILE, record)
    return len(record["attempts"])


def read_attempts(run_dir: Path) -> dict[str, Any] | None:
    """A trial's ``worker.json`` (written whole, atomically), or None before its first attempt."""
    path = run_dir / WORKER_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _finish_attempt(run_dir: Path, outcome: str, error: str | None = None) -> None:
    record = read_attempts(run_dir) or {"attempts": [{}]}
    record["attempts"][-1].update({"ended": time.time(), "outcome": outcome, **({"error": error} if error else {})})
    atomic_write_json(run_dir / WORKER_FILE, record)
