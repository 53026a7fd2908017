"""The one retraining loop: a genotype becomes a plain network, trained and evaluated.

Only the chosen op is built at each label (no supernet import). Every epoch
evaluates on the eval split and writes ``checkpoints/last.pt`` atomically (and
``best.pt`` when the primary metric improves); ``train.checkpoint_every`` adds
mid-epoch checkpoints. A checkpoint holds everything the next step depends on
(weights, optimizer, loss scaler, weight average, epoch and step, every rank's
random streams, the task's sampling state), so a resumed run continues exactly
as if it had not stopped. At the end the evaluation-server results file for the
test split is written from the final weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nas.checkpoint import load_checkpoint, save_checkpoint
from nas.config import RunConfig, config_to_dict
from nas.data import make_eval_loader, make_loader, move_batch
from nas.distributed import SINGLE, World, gather_lists, main_first
from nas.genotype import Genotype
from nas.board.writer import BoardWriter, forward_flops_per_sample, op_counts
from nas.io import atomic_write_json, atomic_write_jsonl
from nas.pretrained import init_from_checkpoint
from nas.run import remove_interrupted_writes
from nas.space import fixed_block_factory
from nas.training import (EpochProgress, Trainer, count_parameters, format_count, lr_for_epoch, predict, rng_state,
                          restore_rng_states, set_lr, start_run,
                          stop_at_step_boundary)

__all__ = ["run_retrain", "RetrainResult", "LAST", "BEST"]

log = logging.getLogger("nas.retrain")
LAST, BEST = Path("checkpoints/last.pt"), Path("checkpoints/best.pt")


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
                resume: bool = False, genotype_source: str = "genotype", world: World = SINGLE,
                on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> RetrainResult:
    """Train ``genotype`` in ``run_dir``. ``on_epoch(epoch, record)`` (1-based epoch; the record holds
    ``metrics`` when there is an eval split) runs after each epoch's checkpoint and metrics are written,
    so an exception it raises (e.g. a pruned trial) stops the run with every written file whole."""
    device, task, space = start_run(config, run_dir, progress, world)
    if world.is_main:
        remove_interrupted_writes(run_dir)
    space.validate(genotype, genotype_source)
    train_cfg = config.train

    train_split, eval_split, test_split = (_split(config.task.train_split), _split(config.task.eval_split),
                                           _split(config.task.test_split))
    wanted = [s for s in dict.fromkeys([train_split, eval_split, test_split]) if s]
    with main_first(world):  # rank 0 generates the built-in data and the vocabulary once
        data = task.prepare(wanted)
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta),
                              fixed_block_factory(genotype.choices)).to(device)
    if train_cfg.init and not resume:  # a resumed run continues from its own checkpoint instead
        init_from_checkpoint(model, Path(train_cfg.init), genotype, config, run_dir)
    if world.rank > 0:  # same initial weights on every rank, different dropout draws
        torch.manual_seed(config.seed + 7919 * world.rank)
    trainer = Trainer(model, task, train_cfg, device, world)
    log.info("retrain: task %s, %s, %s parameters, %d training samples, %d process(es) (data: %s)", task.name,
             space.describe(genotype.choices), format_count(count_parameters(model)),
             len(data.splits[train_split]), world.size, data.info.get("data_dir"))

    start_epoch, best, history, progress_state = 0, None, [], None
    if resume:
        state = load_checkpoint(run_dir / LAST, map_location=device, require=("model", "optimizer", "history", "epoch"))
        trainer.load_state_dict(state, str(run_dir / LAST))
        restore_rng_states(state.get("rng") or [], world, run_dir / LAST)
        task.load_state_dict(state.get("task") or {})
        start_epoch, best, history = state["epoch"], state.get("best"), state["history"]
        progress_state = state.get("progress")
        where = f"epoch {start_epoch} + {progress_state['steps']} steps" if progress_state else f"epoch {start_epoch}"
        log.info("resumed from %s after %s", run_dir / LAST, where)
        if start_epoch >= train_cfg.epochs:
            # Killed after its last checkpoint (while predicting or writing the summary), or simply rerun:
            # nothing is trained again; what a finished run writes is written (again, atomically).
            log.info("%s: all %d epochs are trained (raise train.epochs to train more); writing the final "
                     "predictions and summary", run_dir / LAST, start_epoch)

    def save(tag_paths: list[Path], epoch: int, progress_now: EpochProgress | None) -> None:
        rngs = gather_lists([rng_state()], world)  # collective: every rank takes part
        if not world.is_main:
            return
        state = {**trainer.state_dict(), "epoch": epoch, "best": best, "history": history, "rng": rngs,
                 "task": task.state_dict(), "progress": progress_now.state_dict() if progress_now else None,
                 "world_size": world.size, "config": config_to_dict(config), "genotype": genotype.to_dict()}
        for path in tag_paths:
            save_checkpoint(state, run_dir / path)

    # TensorBoard: per-epoch scalars, then one HParams row for the run (rank 0 writes).
    board = BoardWriter(run_dir / "tensorboard") if world.is_main else None
    baseline = None
    if eval_split and world.is_main:
        baseline = task.baseline(data.splits[train_split], eval_split, data.splits[eval_split])
    metrics: dict[str, Any] = dict(history[-1].get("metrics") or {}) if history else {}
    if start_epoch >= train_cfg.epochs and world.is_main:  # the kill may have come before the last epoch's line
        atomic_write_jsonl(run_dir / "metrics.jsonl", history)
    with stop_at_step_boundary():  # Ctrl-C / SIGTERM: finish the step, save, then stop
        for epoch in range(start_epoch, train_cfg.epochs):
            set_lr(trainer.optimizer, lr_for_epoch(epoch, train_cfg))
            done = EpochProgress(progress_state)
            if progress_state is None:
                task.begin_epoch(model, epoch, device)
            progress_state = None

            def checkpoint_mid_epoch(now: EpochProgress, epoch: int = epoch) -> None:
                if train_cfg.checkpoint_every and now.steps % train_cfg.checkpoint_every == 0:
                    save([LAST], epoch, now)

            loader = make_loader(data.splits[train_split], train_cfg.batch_size, True, config.seed + epoch,
                                 train_cfg.num_workers, world=world, start_step=done.batches,
                                 group_by_length=train_cfg.group_by_length)
            stats = trainer.train_epoch(loader, f"train {epoch + 1}/{train_cfg.epochs}", progress, done,
                                        on_step=checkpoint_mid_epoch,
                                            on_stop=lambda now, epoch=epoch: save([LAST], epoch, now))
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr_for_epoch(epoch, train_cfg), **stats}
            if eval_split:
                with trainer.evaluation_weights():
                    metrics = _evaluate(trainer, task, data.splits[eval_split], eval_split, config, world, progress)
                record["metrics"] = metrics
            history.append(record)
            score = metrics.get(task.primary_metric) if metrics else None
            improved = score is not None and (best is None or score > best)
            if improved:
                best = score
            save([LAST, BEST] if improved else [LAST], epoch + 1, None)
            if world.is_main:
                atomic_write_jsonl(run_dir / "metrics.jsonl", history)
                board.train_epoch(record)
            shown = f" {eval_split} {task.format_metrics(metrics)}" if metrics else ""
            log.info("epoch %d/%d loss=%.3f%s", epoch + 1, train_cfg.epochs, stats["loss"], shown)
            if on_epoch is not None:
                on_epoch(epoch + 1, record)

    results_path, test_metrics = None, None
    if test_split:
        test_set = data.splits[test_split]
        with trainer.evaluation_weights():
            predictions = predict(model, make_eval_loader(task.evaluation_view(test_set), train_cfg.eval_batch_size,
                                                          world), task, device, f"predict {test_split}", progress,
                                  world, trainer.autocast)
        if world.is_main:
            results_path = task.write_results(predictions, run_dir / "results" /
                                              f"{task.name}_{test_split}_results.json", test_set)
        if test_split != eval_split and task.is_labelled(test_set):
            test_metrics = task.evaluate(test_split, test_set, predictions)
            log.info("final model on %s: %s", test_split, task.format_metrics(test_metrics))
    summary = {"task": task.name, "primary_metric": task.primary_metric, "genotype": genotype.to_dict(),
               "eval_split": eval_split, "processes": world.size,
               "final": metrics, "best": best, "baseline": baseline, "epochs": train_cfg.epochs,
               "test_split": test_split, "test": test_metrics,
               "results_file": str(results_path) if results_path else None, "data_dir": data.info.get("data_dir")}
    summary_path = run_dir / "summary.json"
    if world.is_main:
        atomic_write_json(summary_path, summary)
        _board_summary(board, config, genotype, model, data, train_split, task.primary_metric, metrics, best,
                       test_split, test_metrics)
        board.close()
    return RetrainResult(run_dir, task.primary_metric, metrics, baseline, results_path, summary_path,
                         test_split, test_metrics)


def _board_summary(board: BoardWriter, config: RunConfig, genotype: Genotype, model, data, train_split: str,
                   primary: str, metrics: dict[str, Any], best: float | None, test_split: str | None,
                   test_metrics: dict[str, Any] | None) -> None:
    """The run's HParams row: what it trained (genotype summary, size, cost, recipe) and how it did."""
    sample = next(iter(make_eval_loader(data.splits[train_split], 8)))
    hparams: dict[str, Any] = {
        "task": config.task.name, "space": config.space.name, "hidden": config.space.hidden,
        "lr": config.train.lr, "batch_size": config.train.batch_size, "epochs": config.train.epochs,
        "parameters": count_parameters(model), "forward_gflops_per_sample":
            round(forward_flops_per_sample(model, move_batch(sample, next(model.parameters()).device)) / 1e9, 6),
        **op_counts(genotype.choices)}
    results: dict[str, float] = {}
    if primary in metrics:
        results[f"hparams/final_{primary}"] = float(metrics[primary])
    if best is not None:
        results[f"hparams/best_{primary}"] = float(best)
    if test_metrics and primary in test_metrics:
        results[f"hparams/{test_split}_{primary}"] = float(test_metrics[primary])
    board.hparams(hparams, results or {"hparams/epochs": float(config.train.epochs)})


def _evaluate(trainer: Trainer, task, dataset, split: str, config: RunConfig, world: World,
              progress: bool) -> dict[str, Any]:
    view = task.evaluation_view(dataset)
    predictions = predict(trainer.model, make_eval_loader(view, config.train.eval_batch_size, world), task,
                          trainer.device, f"eval {split}", progress, world, trainer.autocast)
    return task.evaluate(split, dataset, predictions)


def _split(name: str | None) -> str | None:
    return None if name in (None, "", "none") else name

