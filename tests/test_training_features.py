"""The training features of the shared Trainer: each one shown to have its effect."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from nas.config import TrainConfig
from nas.data import make_loader
from nas.errors import UserError
from nas.training import DivergenceError, EpochProgress, Trainer, check_train_config, lr_for_epoch, resolve_precision


class Regression(Dataset):
    """Batch-level dataset of a fixed random linear problem."""

    def __init__(self, size: int = 48, dim: int = 6) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, dim, generator=generator)
        self.y = self.x @ torch.randn(dim, 1, generator=generator) + 0.1 * torch.randn(size, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return {"tokens": self.x[index], "target": self.y[index]}


class SumLoss:
    """Like the real tasks: a loss summed over samples."""

    def __init__(self, poison_step: int | None = None) -> None:
        self.calls = 0
        self.poison_step = poison_step

    def loss(self, outputs, batch):
        self.calls += 1
        value = ((outputs - batch["target"]) ** 2).sum()
        return value * float("nan") if self.calls == self.poison_step else value


class Net(nn.Module):
    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layers = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, batch):
        return self.layers(batch["tokens"])  # (B, 1)


def _train(config: TrainConfig, epochs: int = 1, task: SumLoss | None = None) -> Trainer:
    model, data = Net(), Regression()
    trainer = Trainer(model, task or SumLoss(), config, torch.device("cpu"))
    for epoch in range(epochs):
        loader = make_loader(data, config.batch_size, True, seed=epoch)
        trainer.train_epoch(loader, "test", False, EpochProgress())
    return trainer


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


BASE = TrainConfig(epochs=2, batch_size=8, lr=1e-2, grad_clip=0.0, warmup_epochs=0)


def test_accumulating_k_batches_equals_one_batch_k_times_larger() -> None:
    accumulated = _train(replace(BASE, batch_size=4, accumulate=3), epochs=2)
    single = _train(replace(BASE, batch_size=12), epochs=2)
    baseline = _train(replace(BASE, batch_size=4), epochs=2)
    assert torch.allclose(_params(accumulated.model), _params(single.model), atol=1e-6)
    assert not torch.allclose(_params(baseline.model), _params(single.model), atol=1e-3)


def test_accumulation_also_equal_under_clipping() -> None:
    accumulated = _train(replace(BASE, batch_size=4, accumulate=2, grad_clip=0.5))
    single = _train(replace(BASE, batch_size=8, grad_clip=0.5))
    assert torch.allclose(_params(accumulated.model), _params(single.model), atol=1e-6)


def test_ema_weights_differ_from_raw_and_are_the_evaluated_ones() -> None:
    trainer = _train(replace(BASE, ema_decay=0.9), epochs=2)
    raw = _params(trainer.model)
    shadow = torch.cat([trainer.ema.shadow[name].reshape(-1) for name, _ in trainer.model.named_parameters()])
    assert not torch.allclose(raw, shadow, atol=1e-4)
    with trainer.evaluation_weights():
        assert torch.equal(_params(trainer.model), shadow)
    assert torch.equal(_params(trainer.model), raw)  # raw weights are back for training


def test_ema_is_the_running_average_of_the_steps() -> None:
    """With decay d, after steps w1..wn the average is d^n w0 + sum (1-d) d^(n-k) wk."""
    config = replace(BASE, ema_decay=0.5, batch_size=16)  # 3 steps per epoch
    model, data = Net(), Regression()
    trainer = Trainer(model, SumLoss(), config, torch.device("cpu"))
    expected = _params(model).clone()
    for batch in make_loader(data, 16, True, seed=0):
        trainer.train_epoch([batch], "step", False, EpochProgress())
        expected = 0.5 * expected + 0.5 * _params(model)
    shadow = torch.cat([trainer.ema.shadow[name].reshape(-1) for name, _ in model.named_parameters()])
    assert torch.allclose(shadow, expected, atol=1e-6)


def test_divergence_stops_before_the_bad_update_and_names_the_step() -> None:
    config = replace(BASE, batch_size=8)
    model, data = Net(), Regression()
    trainer = Trainer(model, SumLoss(poison_step=4), config, torch.device("cpu"))
    snapshots = []
    loader = make_loader(data, 8, True, seed=0)
    with pytest.raises(DivergenceError, match=r"train 1/2: the loss became nan at optimizer step 4 of this epoch"):
        trainer.train_epoch(loader, "train 1/2", False, EpochProgress(),
                            on_step=lambda done: snapshots.append(_params(model).clone()))
    assert len(snapshots) == 3 and torch.equal(_params(model), snapshots[-1])
    assert isinstance(DivergenceError("x"), UserError)  # a one-line error, no traceback


def test_cosine_and_step_schedules() -> None:
    step = replace(BASE, lr=1.0, epochs=13, warmup_epochs=3, decay_epochs=[10, 12], decay_rate=0.2)
    assert [lr_for_epoch(e, step) for e in (0, 1, 2, 3, 9, 10, 12)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 0.2, 0.04])
    cosine = replace(step, schedule="cosine", epochs=11, warmup_epochs=1)
    values = [lr_for_epoch(e, cosine) for e in range(11)]
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(1.0)
    assert values[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(a > b for a, b in zip(values[1:], values[2:]))


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32  # bf16 is many times slower on CPUs
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    for key, value, message in (("precision", "fp8", "train.precision: 'fp8' is not one of"),
                                ("schedule", "linear", "train.schedule: 'linear'"),
                                ("accumulate", 0, "train.accumulate must be >= 1"),
                                ("ema_decay", 1.0, r"train.ema_decay must be in \[0, 1\)")):
        with pytest.raises(UserError, match=message):
            check_train_config(replace(BASE, **{key: value}))


def test_bf16_autocast_trains_on_cpu() -> None:
    trainer = _train(replace(BASE, precision="bf16"))
    fp32 = _train(BASE)
    assert trainer.dtype == torch.bfloat16
    difference = (_params(trainer.model) - _params(fp32.model)).abs().max()
    assert 0 < difference < 0.05  # same training, lower precision


def test_resuming_mid_epoch_matches_an_uninterrupted_epoch() -> None:
    config = replace(BASE, batch_size=4)
    data = Regression()
    whole = Trainer(Net(), SumLoss(), config, torch.device("cpu"))
    stats = whole.train_epoch(make_loader(data, 4, True, seed=3), "x", False, EpochProgress())

    first = Trainer(Net(), SumLoss(), config, torch.device("cpu"))
    saved = {}

    def stop_after_five(done: EpochProgress) -> None:
        if done.steps == 5:
            saved.update(state=copy.deepcopy(first.state_dict()), progress=done.state_dict())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.train_epoch(make_loader(data, 4, True, seed=3), "x", False, EpochProgress(), on_step=stop_after_five)
    second = Trainer(Net(), SumLoss(), config, torch.device("cpu"))
    second.load_state_dict(saved["state"], "memory")
    done = EpochProgress(saved["progress"])
    resumed = second.train_epoch(make_loader(data, 4, True, seed=3, start_step=done.batches), "x", False, done)
    assert torch.equal(_params(second.model), _params(whole.model))
    assert resumed["loss"] == pytest.approx(stats["loss"], rel=1e-12)


def test_a_diverging_retrain_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys) -> None:
    from pathlib import Path

    from nas.checkpoint import load_checkpoint
    from nas.cli.main import main

    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
    out = tmp_path / "run"
    code = main(["retrain", "--genotype", str(genotype), "--config", "smoke", "--quiet", "--out", str(out),
                 "train.lr=1e12", "train.grad_clip=0", "train.checkpoint_every=1", "train.threads=1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train 1/2: the loss became nan at optimizer step 2" in err[0]
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 0 and state["progress"]["steps"] == 1  # the step before the bad one
    assert all(torch.isfinite(v).all() for v in state["model"].values())
