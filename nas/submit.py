"""Evaluation-server files from a retrained checkpoint, for any split of its task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.checkpoint import check_weights, load_checkpoint
from nas.config import Layer, resolve_config
from nas.data import make_eval_loader
from nas.ema import WeightAverage
from nas.errors import UserError, shown
from nas.genotype import genotype_from_dict
from nas.space import fixed_block_factory
from nas.training import predict, resolve_precision, start_run

__all__ = ["submit", "Submission"]

log = logging.getLogger("nas.submit")


@dataclass
class Submission:
    path: Path
    task: str
    primary_metric: str
    split: str
    metrics: dict[str, Any] | None  # when the split has labels
    weights: str  # "ema" or "raw"


def submit(checkpoint: Path, split: str | None, out: Path | None, layers: list[Layer], progress: bool = True,
           raw_weights: bool = False, expected_task: str | None = None) -> Submission:
    """Predict ``split`` (default: the run's test split) with the model in ``checkpoint`` and write the task's server file.

    The run directory around the checkpoint (``<run>/checkpoints/<name>.pt``) supplies the
    vocabularies the model was trained with; ``layers`` (e.g. ``--data``) go over its saved config.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    for key in ("config", "genotype", "model"):
        if key not in state:
            raise UserError(f"{checkpoint}: not a 'nas retrain' checkpoint (no '{key}')")
    if not isinstance(state["config"], dict) or not all(isinstance(v, dict) for k, v in state["config"].items()
                                                         if k != "seed"):
        raise UserError(f"{checkpoint}: its 'config' must be a mapping of sections, got {shown(state['config'])}")
    saved_task = state["config"].get("task", {}).get("name")
    if expected_task and saved_task != expected_task:
        raise UserError(f"{checkpoint}: is a '{saved_task}' checkpoint, not '{expected_task}'")
    run_dir = checkpoint.resolve().parent.parent
    if not (run_dir / "vocab.json").is_file():
        raise UserError(f"{checkpoint}: its run directory {run_dir} has no vocab.json; "
                        "submit from a checkpoint inside the run directory that 'nas retrain' wrote")
    config = resolve_config([Layer(f"{checkpoint} (saved config)", state["config"]), *layers])
    genotype = genotype_from_dict(state["genotype"], f"{checkpoint} (genotype)")
    split = split or config.task.test_split  # e.g. test (VQA), testA (RefCOCO unc), test (matching)
    device, task, space = start_run(config, run_dir, progress)
    data = task.prepare([split])
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta),
                              fixed_block_factory(genotype.choices)).to(device)
    check_weights(model, state["model"], checkpoint)
    try:
        model.load_state_dict(state["model"])
        weights = "raw"
        if state.get("ema") is not None and not raw_weights:
            average = WeightAverage(model, 0.5)  # the decay is unused: only the saved average is loaded
            average.load_state_dict(state["ema"])
            model.load_state_dict(average.shadow)
            weights = "ema"
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        detail = " ".join(str(error).split())[:300]
        raise UserError(f"{checkpoint}: its weights do not fit the model its config and genotype build "
                        f"({detail})") from None
    dataset = data.splits[split]
    dtype = resolve_precision(config.train.precision, device)
    autocast = None if dtype == torch.float32 else (lambda: torch.autocast(device.type, dtype=dtype))
    predictions = predict(model, make_eval_loader(task.evaluation_view(dataset), config.train.eval_batch_size),
                          task, device, f"predict {split}", progress, autocast=autocast)
    target = Path(out) if out else run_dir / "results" / f"{task.name}_{split}_results.json"
    path = task.write_results(predictions, target, dataset)
    metrics = task.evaluate(split, dataset, predictions) if task.is_labelled(dataset) else None
    return Submission(path=path, task=task.name, primary_metric=task.primary_metric, split=split, metrics=metrics,
                      weights=weights)
