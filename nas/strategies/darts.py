"""DARTS: the continuous relaxation, every candidate weighted by ``softmax(alpha)``.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055). Each block outputs ``sum_i softmax(alpha)_i o_i``
in weight steps and architecture steps alike. Weight steps treat the mixture
weights as constants; architecture steps, from epoch ``arch_start_epoch`` on and
every ``arch_every`` weight steps, update ``alpha`` with Adam on a held-out batch.

First order (default) takes ``dL_val(w, alpha)/dalpha``. With ``second_order: true``
the gradient is taken at the one-step unrolled weights
``w' = w - xi (dL_train(w, alpha)/dw + decay w)``:

    dL_val(w', alpha)/dalpha - xi * [dL_train(w+, alpha)/dalpha - dL_train(w-, alpha)/dalpha] / (2 eps)

with ``w+- = w +- eps dL_val(w', alpha)/dw'`` and ``eps = r / ||dL_val/dw'||``, DARTS's
finite-difference Hessian-vector product. ``xi`` is the weight optimizer's current
learning rate unless ``unrolled_lr`` sets it; the virtual step is a plain gradient
step (DARTS's SGD without its momentum: the weight optimizer here is Adam). The
weights are restored exactly afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from nas.errors import UserError
from nas.registry import STRATEGIES
from nas.strategies.base import LossFn, WeightAccess
from nas.strategies.oneshot import LogitConfig, LogitStrategy

__all__ = ["DartsStrategy", "DartsConfig"]


@dataclass
class DartsConfig(LogitConfig):
    name: str = "darts"
    arch_start_epoch: int = 20  # warm-up: weights only, so early random weights do not pick the ops
    second_order: bool = False  # DARTS's unrolled architecture gradient (four passes per step instead of one)
    unrolled_lr: float | None = None  # xi of the virtual weight step; null: the weight optimizer's current lr
    finite_difference: float = 0.01  # r in eps = r / ||dL_val/dw'|| (DARTS: 0.01)


@STRATEGIES.register("darts")
class DartsStrategy(LogitStrategy):
    Config = DartsConfig
    name = "darts"

    def __init__(self, config: DartsConfig, seed: int) -> None:
        super().__init__(config, seed)
        if config.finite_difference <= 0:
            raise UserError(f"strategy.finite_difference must be > 0, got {config.finite_difference}")
        if config.unrolled_lr is not None and config.unrolled_lr < 0:
            raise UserError(f"strategy.unrolled_lr must be >= 0 or null, got {config.unrolled_lr}")

    def _mix(self, differentiable: bool) -> None:
        """Every block runs all candidates weighted by ``softmax(alpha)``; constants unless ``differentiable``."""
        for label, block in self.blocks.items():
            probs = torch.softmax(self.alpha(label), dim=0)
            block.weights = probs if differentiable else probs.detach()

    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        super().attach(prior, device)
        self._mix(False)

    def before_weight_step(self) -> None:
        self._mix(False)

    def arch_step(self, loss_fn: LossFn, batch: dict[str, torch.Tensor]) -> float:
        self._mix(True)
        try:
            loss = loss_fn(batch)
            grads = torch.autograd.grad(loss, self.alpha_list(), allow_unused=True)
        finally:
            self._mix(False)  # no graph through alpha outlives the step
        self.apply_arch_gradients(list(grads))
        self._mix(False)
        return float(loss.detach())

    @property
    def wants_weight_batch(self) -> bool:
        return self.config.second_order

    def arch_step_with_weights(self, loss_fn: LossFn, batch: dict[str, torch.Tensor], weights: WeightAccess) -> float:
        if not self.config.second_order:
            return self.arch_step(loss_fn, batch)
        params = weights.parameters
        group = weights.optimizer.param_groups[0]
        xi = self.config.unrolled_lr if self.config.unrolled_lr is not None else float(group["lr"])
        decay = float(group.get("weight_decay", 0.0))
        alphas = self.alpha_list()
        saved = [p.detach().clone() for p in params]
        try:
            # The virtual step w -> w' on a weight batch, with the mixture held constant.
            self._mix(False)
            step = self._reduced(_grads(loss_fn(weights.batch), params), params)
            with torch.no_grad():
                for p, g in zip(params, step):
                    p.sub_(xi * (g + decay * p))
            # The held-out loss at w': its alpha gradient and the direction for the Hessian term.
            self._mix(True)
            loss = loss_fn(batch)
            grads = _grads(loss, alphas + params)
            alpha_grads, direction = grads[:len(alphas)], self._reduced(grads[len(alphas):], params)
            norm = torch.sqrt(sum((d.float() ** 2).sum() for d in direction))
            if float(norm) > 0:
                eps = self.config.finite_difference / float(norm)
                cuda = [p.device for p in params if p.device.type == "cuda"][:1]
                # w+ and w- see the same dropout masks, so their difference is the curvature alone.
                with torch.random.fork_rng(devices=cuda, enabled=True, device_type="cuda"):
                    plus = self._at(saved, direction, eps, params, loss_fn, weights.batch, alphas)
                minus = self._at(saved, direction, -eps, params, loss_fn, weights.batch, alphas)
                alpha_grads = [g - xi * (gp - gm) / (2 * eps) for g, gp, gm in zip(alpha_grads, plus, minus)]
        finally:
            with torch.no_grad():
                for p, value in zip(params, saved):
                    p.copy_(value)
            self._mix(False)
        self.apply_arch_gradients(alpha_grads)
        self._mix(False)
        return float(loss.detach())

    def _at(self, saved: list[torch.Tensor], direction: list[torch.Tensor], eps: float, params: list[nn.Parameter],
            loss_fn: LossFn, batch: dict[str, torch.Tensor], alphas: list[nn.Parameter]) -> list[torch.Tensor]:
        """``dL_train(w + eps * direction, alpha)/dalpha``, with ``w`` = ``saved``."""
        with torch.no_grad():
            for p, value, d in zip(params, saved, direction):
                p.copy_(value + eps * d)
        self._mix(True)  # a fresh softmax: the previous pass freed its graph
        return _grads(loss_fn(batch), alphas)

    def _reduced(self, grads: list[torch.Tensor], params: list[nn.Parameter]) -> list[torch.Tensor]:
        """``grads`` summed over ranks, through the same hook as every other gradient."""
        previous = [p.grad for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        try:
            self.reduce_gradients(params)
            return [p.grad for p in params]
        finally:
            for p, g in zip(params, previous):
                p.grad = g

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._mix(False)


def _grads(loss: torch.Tensor, inputs: list[nn.Parameter]) -> list[torch.Tensor]:
    """``d loss / d inputs``, zeros for inputs the loss does not reach."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
