"""What a sweep leaves behind, read back from the trials' own folders.

Every trial's run directory holds its config, its per-epoch metrics and
``worker.json`` (who ran each attempt and how it ended), so the outputs are
rebuilt from files alone: they agree with the trials whether the sweep
finished, was restored or was killed, and need neither Ray nor its pickled
state to read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.config import RunConfig
from nas.genotype import Genotype, load_genotype, save_genotype
from nas.io import atomic_write_jsonl
from nas.run import provenance
from nas.tune.trial import TRIALS_DIR, read_attempts

__all__ = ["TrialRecord", "collect_trials", "write_outputs", "format_table"]


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # complete | stopped early | diverged | failed | running
    choices: dict[str, str]
    lr: float
    epochs: int  # epochs trained
    metric: float | None  # the primary metric after the last epoch trained
    best_metric: float | None
    epoch_metrics: dict[str, float]
    attempts: int
    nodes: list[str] = field(default_factory=list)
    error: str | None = None

    def rank_key(self) -> tuple:
        # Trials trained for the full budget first (a value after one epoch is not comparable with one after
        # three), then the metric; ties go to the trial made first.
        return (self.status == "complete", self.metric if self.metric is not None else float("-inf"))


def collect_trials(run_dir: Path, config: RunConfig, primary: str) -> list[TrialRecord]:
    """Every trial that started, best first."""
    records = []
    for folder in sorted((run_dir / TRIALS_DIR).glob("*")):
        config_path = folder / "config.yaml"
        if not folder.is_dir() or not config_path.is_file():
            continue
        trial_config = yaml.safe_load(config_path.read_text())
        genotype_choices = _choices(folder)
        history = _history(folder)
        attempts = (read_attempts(folder) or {"attempts": []})["attempts"]
        metrics = [float(h["metrics"][primary]) for h in history if "metrics" in h]
        last_outcome = attempts[-1].get("outcome") if attempts else None
        epochs = len(history)
        if last_outcome == "diverged":
            status = "diverged"
        elif epochs >= config.strategy.trial_epochs:
            status = "complete"
        elif len(attempts) > config.strategy.max_failures and _ray_error(run_dir, folder.name):
            status = "failed"  # restarted max_failures times and failed again
        else:
            status = "stopped early"  # by the scheduler (ASHA ends a trial by stopping its process)
        records.append(TrialRecord(
            trial_id=folder.name, status=status, choices=genotype_choices,
            lr=float(trial_config["train"]["lr"]), epochs=epochs,
            metric=metrics[-1] if metrics else None, best_metric=max(metrics) if metrics else None,
            epoch_metrics={str(h["epoch"]): float(h["metrics"][primary]) for h in history if "metrics" in h},
            attempts=len(attempts), nodes=sorted({a["node_id"] for a in attempts if a.get("node_id")}),
            error=attempts[-1].get("error") if attempts else None))
    return sorted(records, key=lambda r: r.rank_key(), reverse=True)


def _history(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _choices(folder: Path) -> dict[str, str]:
    """The genotype a trial trained (its own ``genotype.json``, written before training)."""
    genotype = folder / "genotype.json"
    return dict(json.loads(genotype.read_text())["choices"]) if genotype.is_file() else {}


def _ray_error(run_dir: Path, trial_id: str) -> bool:
    """Whether Ray recorded an error for the trial (its folder name under ``ray/`` holds the trial id)."""
    return any((folder / "error.txt").is_file() for folder in (run_dir / "ray").glob(f"*{trial_id}*"))


def write_outputs(run_dir: Path, config: RunConfig, trials: list[TrialRecord], primary: str
                  ) -> tuple[Path | None, list[Path]]:
    """``trials.jsonl``, ``genotype.json`` (best trial) and ``best/<rank>-<trial id>.json``."""
    atomic_write_jsonl(run_dir / "trials.jsonl", [asdict(t) for t in trials])
    ranked = [t for t in trials if t.metric is not None and t.choices]
    if not ranked:
        return None, []
    eval_split = config.task.eval_split
    folder = run_dir / "best"
    folder.mkdir(exist_ok=True)
    paths = []
    for rank, trial in enumerate(ranked[:config.strategy.keep_best], start=1):
        genotype = Genotype(space=config.space.name, task=config.task.name, choices=trial.choices,
                            provenance=provenance(config, strategy="ray", trial=trial.trial_id,
                                                  trial_epochs=trial.epochs,
                                                  hyperparameters={"train.lr": trial.lr}),
                            metrics={f"{eval_split}_{primary}": trial.metric, "eval_split": eval_split})
        paths.append(save_genotype(genotype, folder / f"{rank}-{trial.trial_id}.json"))
    for stale in set(folder.glob("*.json")) - set(paths):
        stale.unlink()
    best = save_genotype(load_genotype(paths[0]), run_dir / "genotype.json")
    return best, paths


def format_table(trials: list[TrialRecord], primary: str, limit: int = 10) -> str:
    """The best trials as a plain-text table."""
    rows = [("trial", "status", "epochs", primary, "attempts", "lr")]
    for trial in trials[:limit]:
        rows.append((trial.trial_id, trial.status, str(trial.epochs),
                     f"{trial.metric:.2f}" if trial.metric is not None else "-", str(trial.attempts),
                     f"{trial.lr:.3g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if len(trials) > limit:
        lines.append(f"... and {len(trials) - limit} more in trials.jsonl")
    return "\n".join(lines)
