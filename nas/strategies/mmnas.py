"""MmNas's one-shot search: sampled-path weight steps, binary-gate architecture steps.

Weight steps train one path sampled from ``softmax(alpha)`` per block. From
epoch ``arch_start_epoch`` on, every ``arch_every`` weight steps one
architecture step runs all candidates with binary gates on a held-out batch and
updates the logits with Adam. The argmax genotype is read every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from nas.errors import UserError
from nas.registry import STRATEGIES
from nas.strategies.base import LossFn, SupernetStrategy, param_key

__all__ = ["MmnasStrategy", "MmnasStrategyConfig"]


@dataclass
class MmnasStrategyConfig:
    name: str = "mmnas"
    arch_lr: float = 0.1
    arch_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    arch_weight_decay: float = 0.0
    arch_start_epoch: int = 20  # warm-up epochs of weight training before any architecture step
    arch_every: int = 5  # one architecture step per this many weight steps
    split_portion: float = 0.8  # first part of train for weights, the rest (held out) for architecture
    alpha_init: str = "prior"  # prior: MmNas's MCAN-like logits (+1 / -1); uniform: all zero
    prior_logit: float = 1.0


@STRATEGIES.register("mmnas")
class MmnasStrategy(SupernetStrategy):
    Config = MmnasStrategyConfig
    name = "mmnas"

    def __init__(self, config: MmnasStrategyConfig, seed: int) -> None:
        super().__init__(config, seed)
        if config.alpha_init not in ("prior", "uniform"):
            raise UserError(f"strategy.alpha_init must be 'prior' or 'uniform', got {config.alpha_init!r}")
        if not 0.0 < config.split_portion < 1.0:
            raise UserError(f"strategy.split_portion must be between 0 and 1, got {config.split_portion}")
        if config.arch_every < 1:
            raise UserError(f"strategy.arch_every must be >= 1, got {config.arch_every}")
        self.alphas = nn.ParameterDict()
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        for label, block in self.blocks.items():
            logits = torch.zeros(len(block.names))
            if self.config.alpha_init == "prior" and prior and label in prior:
                logits.fill_(-self.config.prior_logit)
                logits[block.names.index(prior[label])] = self.config.prior_logit
            self.alphas[param_key(label)] = nn.Parameter(logits.to(device))
        betas = tuple(self.config.arch_betas)
        if len(betas) != 2:
            raise UserError(f"strategy.arch_betas must have two values, got {self.config.arch_betas}")
        self.optimizer = torch.optim.Adam(self.alphas.parameters(), lr=self.config.arch_lr, betas=betas,
                                          weight_decay=self.config.arch_weight_decay)

    def _probabilities(self, label: str) -> torch.Tensor:
        return torch.softmax(self.alphas[param_key(label)], dim=0)

    def _sample(self) -> None:
        for label, block in self.blocks.items():
            probs = self._probabilities(label).detach().cpu()
            block.active = int(torch.multinomial(probs, 1, generator=self.generator))

    def before_weight_step(self) -> None:
        self._sample()

    def wants_arch_step(self, epoch: int, step: int) -> bool:
        return epoch >= self.config.arch_start_epoch and (step + 1) % self.config.arch_every == 0

    def arch_step(self, loss_fn: LossFn, batch: dict[str, torch.Tensor]) -> float:
        assert self.optimizer is not None, "attach() must run before arch_step()"
        self._sample()
        for label, block in self.blocks.items():
            probs = self._probabilities(label)
            one_hot = torch.zeros_like(probs)
            one_hot[block.active] = 1.0
            # Value is the binary gate; gradient flows through the softmax to alpha.
            block.gates = one_hot + probs - probs.detach()
        try:
            loss = loss_fn(batch)
            alphas = list(self.alphas.parameters())
            grads = torch.autograd.grad(loss, alphas, allow_unused=True)
        finally:
            for block in self.blocks.values():
                block.gates = None
        self.optimizer.zero_grad(set_to_none=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad if grad is not None else torch.zeros_like(alpha)
        self.reduce_gradients(alphas)  # every rank steps with the same gradient: one genotype
        self.optimizer.step()
        return float(loss.detach())

    def genotype(self) -> dict[str, str]:
        return {label: block.names[int(self.alphas[param_key(label)].argmax())]
                for label, block in self.blocks.items()}

    def probabilities(self) -> dict[str, dict[str, float]]:
        return {label: dict(zip(block.names, self._probabilities(label).tolist()))
                for label, block in self.blocks.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"alphas": {label: self.alphas[param_key(label)].detach().cpu() for label in self.blocks},
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for label, value in state["alphas"].items():
                self.alphas[param_key(label)].copy_(value)
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())  # a CPU generator, wherever the checkpoint was mapped

