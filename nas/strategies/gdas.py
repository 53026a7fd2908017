"""GDAS: one Gumbel-sampled op per block, trained through a straight-through hard sample.

Dong and Yang, "Searching for A Robust Neural Architecture in Four GPU Hours",
CVPR 2019 (https://arxiv.org/abs/1910.04465). Per block and step a Gumbel sample
``h = softmax((log_softmax(alpha) + g) / tau)`` is drawn and made hard:
``h_hard = one_hot(argmax h) - stop_gradient(h) + h``. Only the sampled op runs,
its output multiplied by ``h_hard[k]`` (value 1), so the gradient reaches ``alpha``
through the soft sample while the cost stays that of one path.

Weight steps train the sampled path alone (the argmax of ``log_softmax(alpha) + g``
does not depend on ``tau``); architecture steps, from ``arch_start_epoch`` on and
every ``arch_every`` weight steps, update ``alpha`` with Adam (GDAS: lr 3e-4, betas
(0.5, 0.999), weight decay 1e-3) on a held-out batch. ``tau`` falls linearly from
``tau_max`` in the first epoch to ``tau_min`` in the last, as in GDAS. The genotype
is the argmax of ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nas.errors import UserError
from nas.registry import STRATEGIES
from nas.strategies.base import LossFn
from nas.strategies.oneshot import LogitConfig, LogitStrategy

__all__ = ["GdasStrategy", "GdasConfig", "gdas_tau"]


@dataclass
class GdasConfig(LogitConfig):
    name: str = "gdas"
    tau_max: float = 10.0  # temperature in the first epoch
    tau_min: float = 0.1  # temperature in the last epoch


def gdas_tau(epoch: int, total_epochs: int, tau_max: float, tau_min: float) -> float:
    """GDAS's linear schedule: ``tau_max`` at epoch 0, ``tau_min`` at epoch ``total_epochs - 1``."""
    if total_epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (total_epochs - 1)


@STRATEGIES.register("gdas")
class GdasStrategy(LogitStrategy):
    Config = GdasConfig
    name = "gdas"

    def __init__(self, config: GdasConfig, seed: int) -> None:
        super().__init__(config, seed)
        if not 0 < config.tau_min <= config.tau_max:
            raise UserError(f"strategy.tau_min and tau_max must satisfy 0 < tau_min <= tau_max, "
                            f"got {config.tau_min} and {config.tau_max}")
        self.tau = config.tau_max

    def begin_epoch(self, epoch: int, total_epochs: int) -> None:
        self.tau = gdas_tau(epoch, total_epochs, self.config.tau_max, self.config.tau_min)

    def _gumbel(self, count: int, device: torch.device) -> torch.Tensor:
        # -log(E), E ~ Exp(1), is Gumbel(0, 1); E is kept off 0 so no sample is infinite.
        exponential = torch.empty(count).exponential_(generator=self.generator)
        return -exponential.clamp_(min=torch.finfo(exponential.dtype).tiny).log().to(device)

    def before_weight_step(self) -> None:
        with torch.no_grad():
            for label, block in self.blocks.items():
                alpha = self.alpha(label)
                perturbed = torch.log_softmax(alpha, dim=0) + self._gumbel(len(alpha), alpha.device)
                block.run_single(int(perturbed.argmax()))

    def sample_hard(self) -> None:
        """Draw one straight-through sample per block: ``active`` the sampled op, ``scale`` its hard weight."""
        for label, block in self.blocks.items():
            alpha = self.alpha(label)
            soft = torch.softmax((torch.log_softmax(alpha, dim=0) + self._gumbel(len(alpha), alpha.device)) / self.tau,
                                 dim=0)  # (K,)
            index = int(soft.argmax())
            hard = torch.zeros_like(soft)
            hard[index] = 1.0
            hard = hard - soft.detach() + soft  # value one-hot, gradient of the soft sample
            block.run_single(index)
            block.scale = hard[index]

    def arch_step(self, loss_fn: LossFn, batch: dict[str, torch.Tensor]) -> float:
        self.sample_hard()
        try:
            loss = loss_fn(batch)
            grads = torch.autograd.grad(loss, self.alpha_list(), allow_unused=True)
        finally:
            for block in self.blocks.values():
                block.scale = None
        self.apply_arch_gradients(list(grads))
        return float(loss.detach())

    def extra_state(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.tau = float(state.get("tau", self.config.tau_max))
