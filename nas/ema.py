"""Exponential moving average of a model's weights, evaluated in place of the raw weights."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``shadow = decay * shadow + (1 - decay) * weight`` after every optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers are copied. The
    shadow lives on the model's device, so an update is one fused ``lerp_`` per tensor.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights loaded; the raw weights come back after."""
        raw = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for name, value in state.items():
            self.shadow[name].copy_(value)
