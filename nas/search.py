"""The one search loop: every task, space and strategy plugs into it.

Each epoch trains the supernet's weights on the first part of the training
split (with the strategy's architecture steps interleaved on the held-out
part), then evaluates the current argmax architecture on the held-out part and
writes it as ``genotype.json``. The search checkpoint is written atomically
every epoch, so ``--resume`` continues an interrupted search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from nas.checkpoint import load_checkpoint, save_checkpoint
from nas.config import RunConfig
from nas.data import contiguous_split, make_loader, move_batch
from nas.errors import UserError
from nas.genotype import Genotype, save_genotype
from nas.io import atomic_write_jsonl
from nas.registry import STRATEGIES
from nas.run import provenance
from nas.training import (count_parameters, format_count, lr_for_epoch, make_optimizer, predict, set_lr,
                          start_run, train_epoch)

__all__ = ["run_search", "SearchResult"]

log = logging.getLogger("nas.search")
CHECKPOINT = "search_checkpoint.pt"


@dataclass
class SearchResult:
    run_dir: Path
    genotype_path: Path
    genotype: Genotype
    history: list[dict[str, Any]]


def run_search(config: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False) -> SearchResult:
    device, task, space = start_run(config, run_dir, progress)
    strategy = STRATEGIES.get(config.strategy.name)(config.strategy, seed=config.seed)

    train_split = config.task.train_split
    data = task.prepare([train_split])
    weight_set, heldout_set = contiguous_split(data.splits[train_split], config.strategy.split_portion)
    heldout_view = task.evaluation_view(heldout_set)
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta), strategy.make_block)
    model.to(device)
    strategy.attach(space.prior(), device)
    optimizer = make_optimizer(model.parameters(), config.train)
    log.info("search: task %s, space %s, strategy %s, supernet %s parameters, %d weight / %d held-out samples "
             "(data: %s)", task.name, space.name, strategy.name, format_count(count_parameters(model)),
             len(weight_set), len(heldout_set), data.info.get("data_dir"))

    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint_path = run_dir / CHECKPOINT
    if resume:
        state = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        strategy.load_state_dict(state["strategy"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = state["history"], state["epoch"]
        log.info("resumed from %s after epoch %d", checkpoint_path, start_epoch)
    if start_epoch >= config.train.epochs:
        raise UserError(f"{checkpoint_path}: the search already ran {start_epoch} epochs; "
                        f"raise train.epochs (now {config.train.epochs}) to continue it")

    genotype_path = run_dir / "genotype.json"
    key = f"heldout_{task.primary_metric}"
    heldout_name = f"{train_split}[{config.strategy.split_portion:g}:]"
    loss_fn = lambda batch: task.loss(model(batch), batch)  # noqa: E731
    genotype = None
    for epoch in range(start_epoch, config.train.epochs):
        set_lr(optimizer, lr_for_epoch(epoch, config.train))
        task.begin_epoch(model, epoch, device)
        arch_batches = _forever(make_loader(heldout_set, config.train.batch_size, True,
                                            config.seed + 7919 * (epoch + 1), config.train.num_workers))

        def arch_step(step: int) -> dict[str, float] | None:
            if not strategy.wants_arch_step(epoch, step):
                return None
            return {"arch_loss": strategy.arch_step(loss_fn, move_batch(next(arch_batches), device))}

        stats = train_epoch(model, make_loader(weight_set, config.train.batch_size, True, config.seed + epoch,
                                               config.train.num_workers),
                            task, optimizer, config.train, device, f"search {epoch + 1}/{config.train.epochs}",
                            progress, before_step=lambda step: strategy.before_weight_step(), after_step=arch_step)
        choices = strategy.genotype()
        with strategy.fixed(choices):
            predictions = predict(model, make_loader(heldout_view, config.train.eval_batch_size, False, 0),
                                  task, device, "held-out eval", progress)
        metrics = task.evaluate(heldout_name, heldout_set, predictions)
        stable = 1 + (history[-1]["stable_epochs"] if history and history[-1]["genotype"] == choices else 0)
        record = {"epoch": epoch + 1, "lr": lr_for_epoch(epoch, config.train), **stats, key: metrics[task.primary_metric],
                  "metrics": metrics, "genotype": choices, "stable_epochs": stable,
                  "probabilities": strategy.probabilities()}
        history.append(record)
        genotype = Genotype(space=space.name, task=task.name, choices=choices,
                            provenance=provenance(config, strategy=strategy.name, epoch=epoch + 1,
                                                  stable_epochs=stable),
                            metrics={key: metrics[task.primary_metric], "heldout_split": heldout_name})
        # Checkpoint first: the genotype and log written after it never run ahead of it.
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "strategy": strategy.state_dict(), "torch_rng": torch.get_rng_state(),
                         "history": history, "epoch": epoch + 1}, checkpoint_path)
        save_genotype(genotype, genotype_path)
        atomic_write_jsonl(run_dir / "search_log.jsonl", history)
        arch = f" arch_loss={stats['arch_loss']:.3f}" if "arch_loss" in stats else ""
        log.info("epoch %d/%d loss=%.3f%s held-out %s | %s%s", epoch + 1, config.train.epochs, stats["loss"], arch,
                 task.format_metrics(metrics), space.describe(choices),
                 f" (unchanged for {stable} epochs)" if stable > 1 else "")
    assert genotype is not None
    return SearchResult(run_dir=run_dir, genotype_path=genotype_path, genotype=genotype, history=history)


def _forever(loader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader
