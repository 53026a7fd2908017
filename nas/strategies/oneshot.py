"""Pieces shared by the one-shot strategies DARTS, GDAS and SPOS.

- ``OneShotConfig``: the settings every one of them has (the weight / held-out
  split, the cap on parameter-free ops); ``LogitConfig`` adds when architecture
  steps run and their optimizer.
- ``LogitStrategy``: a strategy with one vector of architecture logits per block,
  optimized with Adam on held-out batches (DARTS and GDAS differ only in how a
  block runs during weight and architecture steps).
- ``cap_parameter_free``: the export-time guard against collapse onto
  parameter-free ops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from nas.errors import UserError
from nas.strategies.base import SupernetStrategy, param_key

__all__ = ["OneShotConfig", "LogitConfig", "LogitStrategy", "cap_parameter_free", "check_one_shot_config"]

log = logging.getLogger("nas.strategies")


@dataclass
class OneShotConfig:
    name: str = ""
    split_portion: float = 0.5  # first part of train for weights, the rest (held out) for architecture
    max_parameter_free: int | None = None  # most blocks a genotype may give a parameter-free op; null: no cap


@dataclass
class LogitConfig(OneShotConfig):
    arch_start_epoch: int = 0  # warm-up epochs of weight training before any architecture step
    arch_every: int = 1  # one architecture step per this many weight steps
    # DARTS's and GDAS's architecture optimizer: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3.
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    alpha_std: float = 1e-3  # initial logits ~ N(0, alpha_std^2), as DARTS and GDAS


def check_one_shot_config(config: OneShotConfig) -> None:
    if not 0.0 < config.split_portion < 1.0:
        raise UserError(f"strategy.split_portion must be between 0 and 1, got {config.split_portion}")
    if config.max_parameter_free is not None and config.max_parameter_free < 0:
        raise UserError(f"strategy.max_parameter_free must be >= 0 or null, got {config.max_parameter_free}")


def cap_parameter_free(choices: Mapping[str, str], strengths: Mapping[str, Mapping[str, float]],
                       parameter_free: frozenset[str], cap: int | None) -> dict[str, str]:
    """At most ``cap`` blocks keep a parameter-free op; the weakest excess ones get their best other op.

    ``strengths[label][op]`` ranks ops (e.g. probabilities): the parameter-free choices with the
    lowest strength are replaced by the strongest parameter-bearing candidate of their block.
    Ties go by network order, later blocks replaced first. A warning names every replacement.
    """
    result = dict(choices)
    if cap is None:
        return result
    order = {label: index for index, label in enumerate(choices)}
    free = [label for label, op in choices.items() if op in parameter_free]
    excess = len(free) - cap
    if excess <= 0:
        return result
    replaceable = [label for label in free if any(op not in parameter_free for op in strengths[label])]
    replaceable.sort(key=lambda label: (strengths[label][choices[label]], -order[label]))
    replaced = []
    for label in replaceable[:excess]:
        bearing = {op: value for op, value in strengths[label].items() if op not in parameter_free}
        best = max(bearing, key=lambda op: (bearing[op], -list(strengths[label]).index(op)))
        result[label] = best
        replaced.append(f"{label}: {choices[label]} -> {best}")
    log.warning("strategy.max_parameter_free=%d: %d blocks chose a parameter-free op; replaced %s%s", cap,
                len(free), ", ".join(replaced),
                "" if len(replaced) == excess else
                f" ({excess - len(replaced)} more have no parameter-bearing candidate and stay)")
    return result


class LogitStrategy(SupernetStrategy):
    """Architecture logits per block, Adam on held-out batches, argmax genotype (DARTS, GDAS)."""

    def __init__(self, config: LogitConfig, seed: int) -> None:
        super().__init__(config, seed)
        check_one_shot_config(config)
        if config.arch_every < 1:
            raise UserError(f"strategy.arch_every must be >= 1, got {config.arch_every}")
        if config.arch_start_epoch < 0:
            raise UserError(f"strategy.arch_start_epoch must be >= 0, got {config.arch_start_epoch}")
        if len(config.arch_betas) != 2:
            raise UserError(f"strategy.arch_betas must have two values, got {config.arch_betas}")
        self.alphas = nn.ParameterDict()
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        # No prior: DARTS and GDAS start from near-uniform random logits.
        for label, block in self.blocks.items():
            logits = self.config.alpha_std * torch.randn(len(block.names), generator=self.generator)
            self.alphas[param_key(label)] = nn.Parameter(logits.to(device))
        self.optimizer = torch.optim.Adam(self.alphas.parameters(), lr=self.config.arch_lr,
                                          betas=tuple(self.config.arch_betas),
                                          weight_decay=self.config.arch_weight_decay)

    def alpha(self, label: str) -> nn.Parameter:
        return self.alphas[param_key(label)]

    def alpha_list(self) -> list[nn.Parameter]:
        return [self.alpha(label) for label in self.blocks]

    def wants_arch_step(self, epoch: int, step: int) -> bool:
        return epoch >= self.config.arch_start_epoch and (step + 1) % self.config.arch_every == 0

    def apply_arch_gradients(self, grads: list[torch.Tensor | None]) -> None:
        """One Adam step on the logits with ``grads`` (one per block, in block order), summed over ranks."""
        assert self.optimizer is not None, "attach() must run before an architecture step"
        alphas = self.alpha_list()
        self.optimizer.zero_grad(set_to_none=True)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad.detach() if grad is not None else torch.zeros_like(alpha)
        self.reduce_gradients(alphas)  # every rank steps with the same gradient: one genotype
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def genotype(self) -> dict[str, str]:
        choices = {label: block.names[int(self.alpha(label).argmax())] for label, block in self.blocks.items()}
        return cap_parameter_free(choices, self.probabilities(), self.parameter_free_ops,
                                  self.config.max_parameter_free)

    def probabilities(self) -> dict[str, dict[str, float]]:
        return {label: dict(zip(block.names, torch.softmax(self.alpha(label).detach(), dim=0).tolist()))
                for label, block in self.blocks.items()}

    def extra_state(self) -> dict[str, Any]:
        """Subclass state beyond logits, optimizer and generator (e.g. a temperature)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"alphas": {label: self.alpha(label).detach().cpu() for label in self.blocks},
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "generator": self.generator.get_state(), **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for label, value in state["alphas"].items():
                self.alpha(label).copy_(value)
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())  # a CPU generator, wherever the checkpoint was mapped
        self.load_extra_state(state)
