"""Pieces shared by the search loop and the retrain loop."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from nas.config import RunConfig, TrainConfig
from nas.data import move_batch
from nas.errors import UserError
from nas.task import Task

__all__ = ["start_run", "seed_everything", "resolve_device", "make_optimizer", "lr_for_epoch", "set_lr", "train_epoch",
           "predict", "count_parameters"]


def start_run(config: RunConfig, run_dir: Path, progress: bool) -> tuple[torch.device, Task, Any]:
    """Seed, set threads, pick the device and build the run's task and search space."""
    from nas.registry import SPACES, TASKS

    seed_everything(config.seed)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    task = TASKS.get(config.task.name)(config.task, run_dir, progress)
    space = SPACES.get(config.space.name)(config.space)
    return device, task, space


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: '{name}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: '{name}' asked for, but this machine has no CUDA device")
    return device


def make_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with MmNas/MCAN's betas (0.9, 0.98) and eps 1e-9."""
    return torch.optim.Adam(parameters, lr=config.lr, betas=(0.9, 0.98), eps=1e-9,
                            weight_decay=config.weight_decay)


def lr_for_epoch(epoch: int, config: TrainConfig) -> float:
    """Learning rate of 0-based ``epoch``: warm-up, then a step decay after each listed epoch.

    Warm-up follows MmNas: epochs 0..W-1 use lr * (k+1)/(W+1), i.e. 1/4, 2/4, 3/4 for W=3.
    ``decay_epochs`` count completed epochs, as in MCAN's ``LR_DECAY_LIST``.
    """
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    decays = sum(1 for boundary in config.decay_epochs if epoch >= boundary)
    return config.lr * config.decay_rate ** decays


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_epoch(model: nn.Module, loader: DataLoader, task: Task, optimizer: torch.optim.Optimizer,
                config: TrainConfig, device: torch.device, description: str, progress: bool,
                before_step: Callable[[int], None] | None = None,
                after_step: Callable[[int], dict[str, float] | None] | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss per sample (and hook statistics)."""
    model.train()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    total, samples, extra = 0.0, 0, {}
    bar = tqdm(loader, desc=description, unit="batch", leave=False, disable=None if progress else True)
    for step, batch in enumerate(bar):
        batch = move_batch(batch, device)
        if before_step is not None:
            before_step(step)
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model(batch), batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{description}: loss became {float(loss)} at step {step}; "
                                     "lower train.lr or check the data")
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        size = len(batch["tokens"])
        total += float(loss.detach())
        samples += size
        if after_step is not None:
            for key, value in (after_step(step) or {}).items():
                extra.setdefault(key, []).append(value)
        bar.set_postfix(loss=f"{total / samples:.3f}")
    stats = {"loss": total / max(samples, 1)}
    stats.update({key: sum(values) / len(values) for key, values in extra.items()})
    return stats


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, task: Task, device: torch.device, description: str,
            progress: bool) -> list[dict[str, Any]]:
    model.eval()
    predictions: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc=description, unit="batch", leave=False, disable=None if progress else True):
        batch = move_batch(batch, device)
        predictions.extend(task.predict(model(batch), batch))
    return predictions


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def format_count(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}k"


