"""The one search loop: every task, space and strategy plugs into it.

Each epoch trains the supernet's weights on the first part of the training
split (with the strategy's architecture steps interleaved on the held-out
part), then evaluates the current argmax architecture on the held-out part and
writes it as ``genotype.json``. The search checkpoint (weights, optimizer,
strategy state, random streams, how far the epoch got) is written atomically
every epoch and every ``train.checkpoint_every`` steps, so ``--resume``
continues an interrupted search exactly.

With several processes, each trains on its slice of every global batch and the
architecture gradients are summed across ranks like the weight gradients, so
every rank holds the same architecture parameters and writes the same genotype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from nas.checkpoint import load_checkpoint, save_checkpoint
from nas.config import RunConfig
from nas.data import contiguous_split, make_eval_loader, make_loader, move_batch
from nas.distributed import SINGLE, World, gather_lists, main_first, sum_gradients
from nas.errors import UserError
from nas.board.writer import BoardWriter, entropy as op_entropy
from nas.genotype import Genotype, save_genotype
from nas.io import atomic_write_jsonl
from nas.registry import STRATEGIES
from nas.strategies.base import WeightAccess
from nas.run import provenance, remove_interrupted_writes
from nas.training import (EpochProgress, Trainer, count_parameters, format_count, lr_for_epoch, predict, rng_state,
                          restore_rng_states, set_lr, start_run,
                          stop_at_step_boundary)

__all__ = ["run_search", "SearchResult", "CHECKPOINT"]

log = logging.getLogger("nas.search")
CHECKPOINT = "search_checkpoint.pt"


@dataclass
class SearchResult:
    run_dir: Path
    genotype_path: Path
    genotype: Genotype
    history: list[dict[str, Any]]


def run_search(config: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
               world: World = SINGLE) -> SearchResult:
    if config.train.init:
        raise UserError(f"train.init={config.train.init}: a search trains its supernet from scratch; start a "
                        "retrain (nas retrain --init) from a pre-trained checkpoint instead")
    device, task, space = start_run(config, run_dir, progress, world)
    if world.is_main:
        remove_interrupted_writes(run_dir)
    strategy = STRATEGIES.get(config.strategy.name)(config.strategy, seed=config.seed)
    train_cfg = config.train

    train_split = config.task.train_split
    with main_first(world):  # rank 0 generates the built-in data and the vocabulary once
        data = task.prepare([train_split])
    weight_set, heldout_set = contiguous_split(data.splits[train_split], config.strategy.split_portion)
    heldout_view = task.evaluation_view(heldout_set)
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta), strategy.make_block)
    model.to(device)
    strategy.attach(space.prior(), device)
    strategy.reduce_gradients = lambda parameters: sum_gradients(parameters, world)
    strategy.parameter_free_ops = frozenset(space.parameter_free_ops)
    if world.rank > 0:
        torch.manual_seed(config.seed + 7919 * world.rank)
    if train_cfg.compile != "off":  # each sampled path would be a new graph to compile
        log.info("search: train.compile=%s applies to retraining; the supernet runs uncompiled", train_cfg.compile)
        train_cfg = replace(train_cfg, compile="off")
    trainer = Trainer(model, task, train_cfg, device, world)
    log.info("search: task %s, space %s, strategy %s, supernet %s parameters, %d weight / %d held-out samples, "
             "%d process(es) (data: %s)", task.name, space.name, strategy.name, format_count(count_parameters(model)),
             len(weight_set), len(heldout_set), world.size, data.info.get("data_dir"))

    history: list[dict[str, Any]] = []
    start_epoch, progress_state = 0, None
    checkpoint_path = run_dir / CHECKPOINT
    # TensorBoard: per-epoch scalars, heatmap, genotype diagram, table and diff (rank 0 writes).
    board = None
    if world.is_main:
        board = BoardWriter(run_dir / "tensorboard", getattr(space, "short_names", {}),
                            getattr(space, "diagram_links", {}))
    if resume:
        state = load_checkpoint(checkpoint_path, map_location=device,
                                require=("model", "optimizer", "strategy", "history", "epoch"))
        trainer.load_state_dict(state, str(checkpoint_path))
        strategy.load_state_dict(state["strategy"])
        restore_rng_states(state.get("rng") or [], world, checkpoint_path)
        task.load_state_dict(state.get("task") or {})
        history, start_epoch, progress_state = state["history"], state["epoch"], state.get("progress")
        where = f"epoch {start_epoch} + {progress_state['steps']} steps" if progress_state else f"epoch {start_epoch}"
        log.info("resumed from %s after %s", checkpoint_path, where)
    finished = start_epoch >= train_cfg.epochs
    if finished:
        # Killed after its last checkpoint but maybe before genotype.json and the log caught up, or simply
        # rerun: nothing is searched again; the last epoch's genotype and log are written from the checkpoint.
        log.info("%s: all %d epochs are searched (raise train.epochs to search more); writing the final genotype "
                 "and log", checkpoint_path, start_epoch)

    def save(epoch: int, now: EpochProgress | None) -> None:
        rngs = gather_lists([rng_state()], world)
        if world.is_main:
            save_checkpoint({**trainer.state_dict(), "strategy": strategy.state_dict(), "rng": rngs,
                             "task": task.state_dict(), "history": history, "epoch": epoch,
                             "progress": now.state_dict() if now else None, "world_size": world.size},
                            checkpoint_path)

    genotype_path = run_dir / "genotype.json"
    key = f"heldout_{task.primary_metric}"
    heldout_name = f"{train_split}[{config.strategy.split_portion:g}:]"
    loss_fn = lambda batch: task.loss(model(batch), batch)  # noqa: E731

    def heldout_metrics(choices: Mapping[str, str], bar: bool) -> dict[str, Any]:
        with strategy.fixed(choices), trainer.evaluation_weights():
            predictions = predict(model, make_eval_loader(heldout_view, train_cfg.eval_batch_size, world), task,
                                  device, "held-out eval", bar, world, trainer.autocast)
        return task.evaluate(heldout_name, heldout_set, predictions)

    def genotype_of(record: dict[str, Any]) -> Genotype:
        return Genotype(space=space.name, task=task.name, choices=record["genotype"],
                        provenance=provenance(config, strategy=strategy.name, epoch=record["epoch"],
                                              stable_epochs=record["stable_epochs"], processes=world.size),
                        metrics={key: record[key], "heldout_split": heldout_name})

    genotype = genotype_of(history[-1]) if finished else None
    if finished and world.is_main:
        save_genotype(genotype, genotype_path)
        atomic_write_jsonl(run_dir / "search_log.jsonl", history)
    with stop_at_step_boundary():  # Ctrl-C / SIGTERM: finish the step, save, then stop
        for epoch in range(start_epoch, train_cfg.epochs):
            set_lr(trainer.optimizer, lr_for_epoch(epoch, train_cfg))
            strategy.begin_epoch(epoch, train_cfg.epochs)
            done = EpochProgress(progress_state)
            if progress_state is None:
                task.begin_epoch(model, epoch, device)
            progress_state = None
            arch_seed = config.seed + 7919 * (epoch + 1)
            arch_steps_done = sum(strategy.wants_arch_step(epoch, step) for step in range(done.steps))
            arch_batches = _forever(lambda start: make_loader(heldout_set, train_cfg.batch_size, True, arch_seed,
                                                              train_cfg.num_workers, world=world, start_step=start,
                                                              group_by_length=train_cfg.group_by_length),
                                    skip=arch_steps_done)
            # Strategies whose arch steps look at the weights (second-order DARTS) get one weight batch per step.
            weight_batches = _forever(lambda start: make_loader(weight_set, train_cfg.batch_size, True, arch_seed + 1,
                                                                train_cfg.num_workers, world=world, start_step=start,
                                                                group_by_length=train_cfg.group_by_length),
                                      skip=arch_steps_done) if strategy.wants_weight_batch else None

            def arch_step(step: int, epoch: int = epoch, arch_batches: Iterator = arch_batches,
                          weight_batches: Iterator | None = weight_batches) -> dict[str, float] | None:
                if not strategy.wants_arch_step(epoch, step):
                    return None
                batch = move_batch(next(arch_batches), device)
                with trainer.autocast():
                    if weight_batches is None:
                        return {"arch_loss": strategy.arch_step(loss_fn, batch)}
                    weights = WeightAccess(trainer.parameters, trainer.optimizer, move_batch(next(weight_batches), device))
                    return {"arch_loss": strategy.arch_step_with_weights(loss_fn, batch, weights)}

            def checkpoint_mid_epoch(now: EpochProgress, epoch: int = epoch) -> None:
                if train_cfg.checkpoint_every and now.steps % train_cfg.checkpoint_every == 0:
                    save(epoch, now)

            loader = make_loader(weight_set, train_cfg.batch_size, True, config.seed + epoch, train_cfg.num_workers,
                                 world=world, start_step=done.batches, group_by_length=train_cfg.group_by_length)
            stats = trainer.train_epoch(loader, f"search {epoch + 1}/{train_cfg.epochs}", progress, done,
                                        before_step=lambda step: strategy.before_weight_step(), after_step=arch_step,
                                        on_step=checkpoint_mid_epoch,
                                            on_stop=lambda now, epoch=epoch: save(epoch, now))
            choices = strategy.genotype()
            if epoch == train_cfg.epochs - 1:
                # Inside the last epoch, before its checkpoint: a rerun after a crash here redoes it exactly.
                final = strategy.finish(lambda c: float(heldout_metrics(c, False)[task.primary_metric]))
                choices = dict(final) if final is not None else choices
            metrics = heldout_metrics(choices, progress)
            stable = 1 + (history[-1]["stable_epochs"] if history and history[-1]["genotype"] == choices else 0)
            probabilities = strategy.probabilities()
            entropy = {label: op_entropy(probs) for label, probs in probabilities.items()}
            mean_entropy = sum(entropy.values()) / max(len(entropy), 1)
            record = {"epoch": epoch + 1, "lr": lr_for_epoch(epoch, train_cfg), **stats,
                      key: metrics[task.primary_metric], "metrics": metrics, "genotype": choices,
                      "stable_epochs": stable, "probabilities": probabilities, "entropy": entropy,
                      "mean_entropy": mean_entropy}
            history.append(record)
            genotype = genotype_of(record)
            # Checkpoint first: the genotype and log written after it never run ahead of it.
            save(epoch + 1, None)
            if world.is_main:
                save_genotype(genotype, genotype_path)
                atomic_write_jsonl(run_dir / "search_log.jsonl", history)
                board.search_epoch(record, history[-2] if len(history) > 1 else None, key)
            arch = f" arch_loss={stats['arch_loss']:.3f}" if "arch_loss" in stats else ""
            log.info("epoch %d/%d loss=%.3f%s entropy=%.3f held-out %s | %s%s", epoch + 1, train_cfg.epochs, stats["loss"],
                     arch, mean_entropy, task.format_metrics(metrics), space.describe(choices),
                     f" (unchanged for {stable} epochs)" if stable > 1 else "")
    assert genotype is not None
    if board is not None:
        board.close()
    return SearchResult(run_dir=run_dir, genotype_path=genotype_path, genotype=genotype, history=history)


def _forever(make: Callable[[int], Any], skip: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``make(start)`` without end, starting ``skip`` batches in (for a resumed epoch)."""
    first = make(0)
    per_pass = len(first)
    if per_pass == 0:
        return
    yield from make(skip % per_pass)
    while True:
        yield from make(0)

