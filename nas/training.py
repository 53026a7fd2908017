"""Pieces shared by the search loop and the retrain loop."""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from nas.checkpoint import check_weights
from nas.compile import COMPILE_MODES, compile_forward
from nas.config import RunConfig, TrainConfig
from nas.data import count_samples, move_batch
from nas.distributed import SINGLE, World, gather_lists, init_world, rank_device, sum_gradients, sum_scalars
from nas.ema import WeightAverage
from nas.errors import UserError
from nas.task import Task
from nas.text_cache import caching_text

__all__ = ["start_run", "seed_everything", "resolve_device", "resolve_precision", "make_optimizer", "lr_for_epoch",
           "set_lr", "Trainer", "DivergenceError", "predict", "count_parameters", "format_count", "rng_state",
           "set_rng_state", "restore_rng_states", "StopRequested", "stop_at_step_boundary", "with_auxiliary_loss"]

_CHOICES = {"schedule": ("step", "cosine"), "precision": ("auto", "fp32", "bf16", "fp16"), "compile": COMPILE_MODES}


log = logging.getLogger("nas.training")
_STOP = {"requested": False}


class DivergenceError(UserError):
    """The loss stopped being finite; no weight was updated with it."""


class StopRequested(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the loop stopped at an optimizer-step boundary after saving a checkpoint."""


@contextmanager
def stop_at_step_boundary() -> Iterator[None]:
    """Inside the block, the first Ctrl-C (or SIGTERM) only asks ``Trainer.train_epoch`` to stop after
    the current optimizer step, so the checkpoint it saves is whole; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def request(signum: int, frame: Any) -> None:
        if _STOP["requested"]:
            raise KeyboardInterrupt
        _STOP["requested"] = True
        log.warning("stopping after this optimizer step, once a checkpoint is saved (interrupt again to stop now)")

    for sig in signals:
        signal.signal(sig, request)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STOP["requested"] = False


def start_run(config: RunConfig, run_dir: Path, progress: bool, world: World = SINGLE) -> tuple[torch.device, Task, Any]:
    """Check the train section, seed, set threads, pick the device, join the process group, build
    the task and the space."""
    from nas.registry import SPACES, TASKS

    check_train_config(config.train)
    seed_everything(config.seed)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    device = rank_device(resolve_device(config.train.device), world)
    resolve_precision(config.train.precision, device)  # fail before any data is read
    init_world(world, device)
    task = TASKS.get(config.task.name)(config.task, run_dir, progress and world.is_main)
    space = SPACES.get(config.space.name)(config.space)
    if task.needs_generation and not space.can_generate:
        able = ", ".join(name for name in SPACES.names() if SPACES.get(name).can_generate)
        raise UserError(f"space.name={space.name}: task '{task.name}' writes text, which this space's model cannot "
                        f"do; use space.name={able}")
    return device, task, space


def check_train_config(config: TrainConfig) -> None:
    for key, allowed in _CHOICES.items():
        if getattr(config, key) not in allowed:
            raise UserError(f"train.{key}: '{getattr(config, key)}' is not one of {', '.join(allowed)}")
    if config.accumulate < 1:
        raise UserError(f"train.accumulate must be >= 1, got {config.accumulate}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise UserError(f"train.ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.checkpoint_every < 0:
        raise UserError(f"train.checkpoint_every must be >= 0, got {config.checkpoint_every}")


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


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: ``auto`` is bf16 on a CUDA device that has it and float32 elsewhere
    (bf16 matrix products are many times slower than float32 on most CPUs)."""
    if name == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise UserError("train.precision: fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def make_optimizer(parameters: Any, config: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """Adam with MmNas/MCAN's betas (0.9, 0.98) and eps 1e-9; ``fused`` (CUDA) updates every
    parameter in a few kernels instead of several per tensor."""
    return torch.optim.Adam(parameters, lr=config.lr, betas=(0.9, 0.98), eps=1e-9,
                            weight_decay=config.weight_decay, fused=fused or None)


def lr_for_epoch(epoch: int, config: TrainConfig) -> float:
    """Learning rate of 0-based ``epoch``: warm-up, then step or cosine decay.

    Warm-up follows MmNas: epochs 0..W-1 use lr * (k+1)/(W+1), i.e. 1/4, 2/4, 3/4 for W=3.
    ``decay_epochs`` count completed epochs, as in MCAN's ``LR_DECAY_LIST``. The cosine
    schedule goes from lr at the end of warm-up towards 0 at the last epoch.
    """
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    if config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - config.warmup_epochs) / span))
    decays = sum(1 for boundary in config.decay_epochs if epoch >= boundary)
    return config.lr * config.decay_rate ** decays


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Trainer:
    """The weight updates of both loops: accumulation, autocast, gradient sync across ranks,
    clipping, the divergence guard and the weight average.

    ``train_epoch`` can start part-way into an epoch (``EpochProgress``), so a mid-epoch
    checkpoint resumes exactly.
    """

    def __init__(self, model: nn.Module, task: Task, config: TrainConfig, device: torch.device,
                 world: World = SINGLE) -> None:
        self.model, self.task, self.config, self.device, self.world = model, task, config, device, world
        self.optimizer = make_optimizer(model.parameters(), config, fused=device.type == "cuda")
        self.forward = compile_forward(model, config.compile)
        self.dtype = resolve_precision(config.precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.ema = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._stop = False

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The weights to evaluate and keep: the average when ``ema_decay`` is on."""
        with self.ema.applied(self.model) if self.ema is not None else nullcontext():
            yield

    def train_epoch(self, loader: DataLoader, description: str, progress: bool, done: "EpochProgress",
                    before_step: Callable[[int], None] | None = None,
                    after_step: Callable[[int], dict[str, float] | None] | None = None,
                    on_step: Callable[["EpochProgress"], None] | None = None,
                    on_stop: Callable[["EpochProgress"], None] | None = None) -> dict[str, float]:
        """Train over ``loader`` (which starts after ``done.batches``); returns the epoch's mean
        loss per sample and hook statistics. ``on_step`` runs after every optimizer step; when a stop
        was requested (``stop_at_step_boundary``), ``on_stop`` saves and ``StopRequested`` is raised."""
        model, accumulate = self.model, self.config.accumulate
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(loader, desc=description, unit="batch", leave=False,
                   disable=None if progress and self.world.is_main else True)
        micro, pending_loss, pending_samples = 0, 0.0, 0
        last = len(loader) - 1
        for position, batch in enumerate(bar):
            if micro == 0 and before_step is not None:
                before_step(done.steps)
            batch = move_batch(batch, self.device)
            with self.autocast():
                loss = with_auxiliary_loss(self.model, self.task.loss(self.forward(batch), batch))
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            micro += 1
            pending_loss += float(loss.detach())
            pending_samples += count_samples(batch)
            if micro < accumulate and position < last:
                continue
            self._optimizer_step(pending_loss, pending_samples, description, done)
            done.advance(micro, *self._reduced)
            micro, pending_loss, pending_samples = 0, 0.0, 0
            if after_step is not None:
                for key, value in (after_step(done.steps - 1) or {}).items():
                    done.extra.setdefault(key, []).append(value)
            if on_step is not None:
                on_step(done)
            if self._stop:
                if on_stop is not None:
                    on_stop(done)
                raise StopRequested(f"{description}: stopped after optimizer step {done.steps}")
            bar.set_postfix(loss=f"{done.mean_loss():.3f}")
        return done.stats()

    def _optimizer_step(self, loss: float, samples: int, description: str, done: "EpochProgress") -> None:
        sum_gradients(self.parameters, self.world)
        # The stop request rides along, so every rank stops after the same step.
        total_loss, total_samples, stops = sum_scalars([loss, float(samples), float(_STOP["requested"])], self.world,
                                                       self.device)
        self._reduced = (total_loss, int(total_samples))
        self._stop = stops > 0
        if not math.isfinite(self._reduced[0]):
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergenceError(f"{description}: the loss became {self._reduced[0]} at optimizer step "
                                  f"{done.steps + 1} of this epoch; no weight was updated with it and the last "
                                  "good checkpoint is kept. Lower train.lr or check the data, then resume")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        check_weights(self.model, state["model"], source)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
            # A checkpoint of another network (width, depth, vocabulary) or a damaged one.
            detail = " ".join(str(error).split())[:300]
            raise UserError(f"{source}: its weights do not fit this run's model ({detail})") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise UserError(f"{source}: was trained without train.ema_decay; resume it with ema_decay=0")
            self.ema.load_state_dict(state["ema"])


def with_auxiliary_loss(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """``loss`` plus the model's own training loss of the forward just run, when it has one.

    A model may define ``auxiliary_loss()`` returning a tensor summed over the batch's samples, like
    the task loss, or None (e.g. the ``modules`` space's program-generator and REINFORCE losses).
    """
    extra = getattr(getattr(model, "module", model), "auxiliary_loss", None)  # DistributedDataParallel: .module
    value = extra() if extra is not None else None
    return loss if value is None else loss + value.to(loss.dtype)


class EpochProgress:
    """How far the current epoch got: batches consumed, optimizer steps, loss totals."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.batches: int = state.get("batches", 0)
        self.steps: int = state.get("steps", 0)
        self.loss_sum: float = state.get("loss_sum", 0.0)
        self.samples: int = state.get("samples", 0)
        self.extra: dict[str, list[float]] = {k: list(v) for k, v in state.get("extra", {}).items()}

    def advance(self, batches: int, loss_sum: float, samples: int) -> None:
        """One optimizer step over ``batches`` micro-batches (loss and samples summed over ranks)."""
        self.batches += batches
        self.steps += 1
        self.loss_sum += loss_sum
        self.samples += samples

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.samples, 1)

    def stats(self) -> dict[str, float]:
        result = {"loss": self.mean_loss()}
        result.update({key: sum(values) / len(values) for key, values in self.extra.items() if values})
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "steps": self.steps, "loss_sum": self.loss_sum, "samples": self.samples,
                "extra": self.extra}


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, task: Task, device: torch.device, description: str,
            progress: bool, world: World = SINGLE, autocast: Any = None) -> list[dict[str, Any]]:
    """Predictions for the loader's samples; with several ranks, every rank's, in order."""
    model.eval()
    predictions: list[dict[str, Any]] = []
    with caching_text(model):
        for batch in tqdm(loader, desc=description, unit="batch", leave=False,
                          disable=None if progress and world.is_main else True):
            batch = move_batch(batch, device)
            with autocast() if autocast is not None else nullcontext():
                outputs = model(batch)
            predictions.extend(task.predict(_to_float(outputs), batch))
    return gather_lists(predictions, world)


def _to_float(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, tuple):
        return tuple(_to_float(o) for o in outputs)
    return outputs


def rng_state() -> dict[str, Any]:
    """Every random stream a step can draw from, as tensors and ints (``weights_only``-safe)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss": python_gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    # States are CPU byte tensors, whatever device the checkpoint was mapped to.
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].cpu().numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))


def restore_rng_states(saved: list[dict[str, Any]], world: World, source: Path) -> None:
    """This rank's random streams from a checkpoint's per-rank list (``rng_state`` of each rank)."""
    if len(saved) == world.size:
        set_rng_state(saved[world.rank])
    elif saved:
        # Another process count: the sample order still matches, the dropout draws cannot.
        log.warning("%s was written by %d process(es), this run has %d: dropout draws will differ from an "
                    "uninterrupted run", source, len(saved), world.size)
        set_rng_state(saved[min(world.rank, len(saved) - 1)])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def format_count(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}k"
