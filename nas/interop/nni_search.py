"""``nas search --strategy nni``: one of NNI 3.0's one-shot strategies on a vlnas space and task.

The space is presented to NNI as a model space (``nas.interop.nni_space``); our task's loss,
data split and loaders become an NNI Lightning evaluator; NNI's strategy mutates the space into
its supernet and trains it with Lightning; NNI's exported choice dict is scored on the held-out
split with the supernet's weights and written as ``nni_arch.json`` and as our ``genotype.json``
(with NNI's final op probabilities in ``nni_probabilities.json`` where the algorithm has them).

Only the search itself is NNI's: there is no resume, no multi-process run and no mid-epoch
checkpoint here (the ``nas search`` loop's features), which ``nas search`` says up front.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.config import RunConfig, TrainConfig
from nas.data import GlobalBatchSampler, batch_collate, contiguous_split, count_samples, make_eval_loader
from nas.genotype import Genotype, save_genotype
from nas.interop.nni_env import require_nni
from nas.interop.nni_genotype import NNI_STRATEGIES, genotype_from_nni
from nas.io import atomic_write_json
from nas.run import provenance
from nas.task import Task
from nas.training import lr_for_epoch, make_optimizer, predict, resolve_precision, start_run

__all__ = ["run_nni_search", "NniSearchResult", "NNI_ARCH", "NNI_PROBABILITIES"]

log = logging.getLogger("nas.nni")
NNI_ARCH = "nni_arch.json"  # NNI's exported choice dict, as NNI writes it ({label: op name})
NNI_PROBABILITIES = "nni_probabilities.json"  # NNI's export_probs(): {label: {op: probability}}

_PRECISION = {torch.float32: "32-true", torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}


@dataclass
class NniSearchResult:
    run_dir: Path
    genotype_path: Path
    genotype: Genotype
    nni_arch_path: Path
    probabilities: dict[str, dict[str, float]]


def run_nni_search(config: RunConfig, run_dir: Path, progress: bool = True) -> NniSearchResult:
    """Search ``config.space`` for ``config.task`` with NNI's ``config.strategy.algorithm``."""
    nni_version = require_nni()
    with _quiet_libraries():
        import pytorch_lightning as pl
        from nni.nas.evaluator.pytorch import Lightning, Trainer
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import RawFormatModelSpace

        from nas.interop.nni_space import NniModelSpace

    cfg, train_cfg = config.strategy, config.train
    device, task, space = start_run(config, run_dir, progress)
    data = task.prepare([config.task.train_split])
    weight_set, heldout_set = contiguous_split(data.splits[config.task.train_split], cfg.split_portion)
    model_space = NniModelSpace(space, data.meta, task.build_head(config.space.hidden, data.meta))
    # One-shot strategies draw a weight batch and a held-out batch per step (DARTS, GumbelDARTS,
    # Proxyless zip the two loaders); RandomOneShot trains on the first and validates on the second.
    train_loader = _epoch_loader(weight_set, train_cfg.batch_size, config.seed, train_cfg.num_workers)
    heldout_loader = _epoch_loader(heldout_set, train_cfg.batch_size, config.seed + 7919, train_cfg.num_workers)
    with _quiet_libraries():
        trainer = Trainer(max_epochs=train_cfg.epochs, default_root_dir=str(run_dir), logger=False,
                          enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                          num_sanity_val_steps=0, callbacks=[_epoch_log(train_cfg.epochs)], **_device_args(device),
                          precision=_PRECISION[resolve_precision(train_cfg.precision, device)])
        evaluator = Lightning(_make_task_module(task, train_cfg), trainer, train_dataloaders=train_loader,
                              val_dataloaders=heldout_loader)
    strategy = _make_strategy(cfg, train_cfg)
    log.info("search: task %s, space %s, NNI %s %s (nni %s, pytorch-lightning %s), %d weight / %d held-out samples",
             task.name, space.name, cfg.algorithm, type(strategy).__name__, nni_version, pl.__version__,
             len(weight_set), len(heldout_set))

    started = time.monotonic()
    with _quiet_libraries():
        strategy(RawFormatModelSpace(model_space, evaluator), SequentialExecutionEngine())
        # NNI's own export: the top model of the one-shot strategy, frozen with the supernet's weights.
        best = next(strategy.list_models())
        if cfg.algorithm == "random":
            # RandomOneShot exports a draw from an unseeded numpy RandomState, so one seed would give
            # another subnet each run; draw it from --seed instead (the same uniform distribution).
            draw = random.Random(config.seed)
            best = strategy.model_space.freeze({label: draw.choice(candidates)
                                                for label, candidates in space.choices().items()})
        sample = dict(best.sample)
        probabilities = _probabilities(strategy.oneshot_module)
        child = best.executable_model().network
    seconds = time.monotonic() - started

    nni_arch_path = atomic_write_json(run_dir / NNI_ARCH, sample)
    if probabilities:
        atomic_write_json(run_dir / NNI_PROBABILITIES, probabilities)
    heldout_name = f"{config.task.train_split}[{cfg.split_portion:g}:]"
    metrics = _heldout_metrics(child, task, heldout_set, heldout_name, train_cfg, device)
    key = f"heldout_{task.primary_metric}"
    genotype = genotype_from_nni(
        sample, space, task.name, source=str(nni_arch_path), algorithm=cfg.algorithm,
        provenance=provenance(config, strategy="nni", nni_version=nni_version, lightning_version=pl.__version__,
                              epochs=train_cfg.epochs, search_seconds=round(seconds, 1)))
    genotype.metrics = {key: metrics[task.primary_metric], "heldout_split": heldout_name}
    genotype_path = save_genotype(genotype, run_dir / "genotype.json")
    log.info("NNI %s exported %s | held-out %s", cfg.algorithm, space.describe(genotype.choices),
             task.format_metrics(metrics))
    return NniSearchResult(run_dir, genotype_path, genotype, nni_arch_path, probabilities)


def _make_strategy(cfg: Any, train_cfg: TrainConfig) -> Any:
    """NNI's strategy object for ``cfg.algorithm`` (one of ``NNI_STRATEGIES``)."""
    import nni.nas.strategy as nni_strategy

    cls = getattr(nni_strategy, NNI_STRATEGIES[cfg.algorithm].rsplit(".", 1)[1])
    if cfg.algorithm == "random":
        return cls()
    kwargs: dict[str, Any] = {"arc_learning_rate": cfg.arch_lr, "warmup_epochs": cfg.arch_start_epoch,
                              "gradient_clip_val": train_cfg.grad_clip if train_cfg.grad_clip > 0 else None}
    if cfg.algorithm == "gumbel":
        kwargs["temperature"] = (float(cfg.tau_max), float(cfg.tau_min))
    return cls(**kwargs)


def _make_task_module(task: Task, train_cfg: TrainConfig) -> Any:
    """NNI's Lightning evaluator module for our task: its loss, and our optimizer and lr schedule."""
    from nni.nas.evaluator.pytorch import LightningModule

    class TaskModule(LightningModule):
        def forward(self, batch: dict[str, torch.Tensor]) -> Any:
            return self.model(batch)

        def on_train_epoch_start(self) -> None:
            # The task's per-epoch sampling state (e.g. matching's reseeded negatives), as in our loops.
            task.begin_epoch(self.model, self.current_epoch, self.device)

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = task.loss(self.model(batch), batch)
            self.log("train_loss", loss.detach(), batch_size=count_samples(batch), on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = task.loss(self.model(batch), batch)
            self.log("val_loss", loss.detach(), batch_size=count_samples(batch))
            return loss

        def configure_optimizers(self) -> dict[str, Any]:
            optimizer = make_optimizer(self.model.parameters(), train_cfg)
            # Our epoch schedule (warm-up, step or cosine decay) as a factor of train.lr.
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: lr_for_epoch(epoch, train_cfg) / train_cfg.lr if train_cfg.lr else 0.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    return TaskModule()


class _EpochBatches(Sampler[list[int]]):
    """Shuffled batches drawn afresh on every pass, from ``seed + pass``, as ``nas search`` draws
    each epoch's. Lightning iterates one loader for the whole fit (NNI's combined loaders cycle the
    shorter one), so a fixed permutation would repeat the same order every epoch.
    """

    def __init__(self, length: int, batch_size: int, seed: int) -> None:
        self.length, self.batch_size, self.seed, self.passes = length, batch_size, seed, 0

    def __iter__(self) -> Iterator[list[int]]:
        order = GlobalBatchSampler(self.length, self.batch_size, True, self.seed + self.passes)
        self.passes += 1
        return iter(order)

    def __len__(self) -> int:
        return math.ceil(self.length / self.batch_size)


def _epoch_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=_EpochBatches(len(dataset), batch_size, seed), num_workers=num_workers,
                      collate_fn=batch_collate, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def _device_args(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def _probabilities(oneshot_module: Any) -> dict[str, dict[str, float]]:
    """Final op probabilities per label, where NNI's supernet modules define them."""
    try:
        probs = oneshot_module.export_probs()
    except NotImplementedError:
        return {}
    return {label: {str(op): float(p) for op, p in dist.items()} for label, dist in probs.items()}


@torch.no_grad()
def _heldout_metrics(child: nn.Module, task: Task, heldout_set: Any, name: str, train_cfg: TrainConfig,
                     device: torch.device) -> dict[str, Any]:
    """The exported architecture's held-out metric with the supernet's weights, as ``nas search`` reports it."""
    child.to(device)
    loader = make_eval_loader(task.evaluation_view(heldout_set), train_cfg.eval_batch_size)
    return task.evaluate(name, heldout_set, predict(child, loader, task, device, "held-out eval", False))


def _epoch_log(epochs: int) -> Any:
    """A Lightning callback logging one line per epoch, like ``nas search`` (Lightning's bar is per step)."""
    import pytorch_lightning as pl

    class EpochLog(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            loss = trainer.callback_metrics.get("train_loss")
            value = float(loss) if loss is not None else math.nan
            log.info("epoch %d/%d train loss=%.3f", trainer.current_epoch + 1, epochs, value)

    return EpochLog()


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Keep Lightning's and NNI's chatter out of the run log: start-up tips and device summaries,
    NNI's notes meant for its multi-trial service (traced data loaders, no validation loader in a
    one-shot run) and deprecation warnings between these libraries and this torch. Errors surface."""
    levels = {"pytorch_lightning": logging.WARNING, "lightning.pytorch": logging.WARNING,
              "lightning_fabric": logging.WARNING, "nni": logging.ERROR}
    loggers = [logging.getLogger(name) for name in levels]
    previous = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels.values()):
        logger.setLevel(level)
    with warnings.catch_warnings():
        for message in (".*is found to be not a nn.Module", ".*does not have many workers.*",
                        ".*Direct export from RandomOneShot.*", ".*did not implement export_probs.*",
                        ".*When using training service to spawn trials.*",
                        ".*isinstance\\(treespec, LeafSpec\\).*"):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for logger, level in zip(loggers, previous):
                logger.setLevel(level)
