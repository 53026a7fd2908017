"""The one retraining loop: a genotype becomes a plain network, trained and evaluated.

Only the chosen op is built at each label (no supernet import). Every epoch
evaluates on the eval split and writes ``checkpoints/last.pt`` atomically (and
``best.pt`` when the primary metric improves); at the end the evaluation-server
results file for the test split is written from the final weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.checkpoint import load_checkpoint, save_checkpoint
from nas.config import RunConfig, config_to_dict
from nas.data import make_loader
from nas.errors import UserError
from nas.genotype import Genotype
from nas.io import atomic_write_json, atomic_write_jsonl
from nas.space import fixed_block_factory
from nas.training import (count_parameters, format_count, lr_for_epoch, make_optimizer, predict, set_lr,
                          start_run, train_epoch)

__all__ = ["run_retrain", "RetrainResult"]

log = logging.getLogger("nas.retrain")


@dataclass
class RetrainResult:
    run_dir: Path
    primary_metric: str
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None
    results_path: Path | None
    summary_path: Path
    test_split: str | None = None
    test_metrics: dict[str, Any] | None = None


def run_retrain(config: RunConfig, genotype: Genotype, run_dir: Path, progress: bool = True,
                resume: bool = False, genotype_source: str = "genotype") -> RetrainResult:
    device, task, space = start_run(config, run_dir, progress)
    space.validate(genotype, genotype_source)

    train_split, eval_split, test_split = (_split(config.task.train_split), _split(config.task.eval_split),
                                           _split(config.task.test_split))
    wanted = [s for s in dict.fromkeys([train_split, eval_split, test_split]) if s]
    data = task.prepare(wanted)
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta),
                              fixed_block_factory(genotype.choices)).to(device)
    optimizer = make_optimizer(model.parameters(), config.train)
    log.info("retrain: task %s, %s, %s parameters, %d training samples (data: %s)", task.name,
             space.describe(genotype.choices), format_count(count_parameters(model)),
             len(data.splits[train_split]), data.info.get("data_dir"))

    checkpoints = run_dir / "checkpoints"
    start_epoch, best, history = 0, None, []
    if resume:
        state = load_checkpoint(checkpoints / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history = state["epoch"], state.get("best"), state["history"]
        log.info("resumed from %s after epoch %d", checkpoints / "last.pt", start_epoch)
        if start_epoch >= config.train.epochs:
            raise UserError(f"{checkpoints / 'last.pt'}: already trained {start_epoch} epochs; "
                            f"raise train.epochs (now {config.train.epochs}) to continue")

    baseline = None
    if eval_split and hasattr(task, "baseline"):
        baseline = task.baseline(data.splits[train_split], eval_split, data.splits[eval_split])
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, config.train.epochs):
        set_lr(optimizer, lr_for_epoch(epoch, config.train))
        task.begin_epoch(model, epoch, device)
        stats = train_epoch(model, make_loader(data.splits[train_split], config.train.batch_size, True,
                                               config.seed + epoch, config.train.num_workers),
                            task, optimizer, config.train, device, f"train {epoch + 1}/{config.train.epochs}",
                            progress)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr_for_epoch(epoch, config.train), **stats}
        if eval_split:
            metrics = _evaluate(model, task, data.splits[eval_split], eval_split, config, device, progress)
            record["metrics"] = metrics
        history.append(record)
        score = metrics.get(task.primary_metric) if metrics else None
        improved = score is not None and (best is None or score > best)
        if improved:
            best = score
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                 "best": best, "history": history, "torch_rng": torch.get_rng_state(),
                 "config": config_to_dict(config), "genotype": genotype.to_dict()}
        save_checkpoint(state, checkpoints / "last.pt")
        if improved:
            save_checkpoint(state, checkpoints / "best.pt")
        atomic_write_jsonl(run_dir / "metrics.jsonl", history)
        shown = f" {eval_split} {task.format_metrics(metrics)}" if metrics else ""
        log.info("epoch %d/%d loss=%.3f%s", epoch + 1, config.train.epochs, stats["loss"], shown)

    results_path, test_metrics = None, None
    if test_split:
        test_set = data.splits[test_split]
        predictions = predict(model, make_loader(task.evaluation_view(test_set), config.train.eval_batch_size,
                                                 False, 0), task, device, f"predict {test_split}", progress)
        results_path = task.write_results(predictions, run_dir / "results" / f"{task.name}_{test_split}_results.json")
        if test_split != eval_split and task.is_labelled(test_set):
            test_metrics = task.evaluate(test_split, test_set, predictions)
            log.info("final model on %s: %s", test_split, task.format_metrics(test_metrics))
    summary = {"task": task.name, "primary_metric": task.primary_metric, "genotype": genotype.to_dict(),
               "eval_split": eval_split,
               "final": metrics, "best": best, "baseline": baseline, "epochs": config.train.epochs,
               "test_split": test_split, "test": test_metrics,
               "results_file": str(results_path) if results_path else None, "data_dir": data.info.get("data_dir")}
    summary_path = atomic_write_json(run_dir / "summary.json", summary)
    return RetrainResult(run_dir, task.primary_metric, metrics, baseline, results_path, summary_path,
                         test_split, test_metrics)


def _evaluate(model, task, dataset, split: str, config: RunConfig, device, progress: bool) -> dict[str, Any]:
    view = task.evaluation_view(dataset)
    predictions = predict(model, make_loader(view, config.train.eval_batch_size, False, 0), task, device,
                          f"eval {split}", progress)
    return task.evaluate(split, dataset, predictions)


def _split(name: str | None) -> str | None:
    return None if name in (None, "", "none") else name
