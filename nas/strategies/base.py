"""The strategy protocol used by the shared search loop (``nas.search``).

A strategy owns the architecture parameters and its mixed ops. The loop owns
the data, the network weights and their optimizer, and calls the strategy at
fixed points: before each weight step, for architecture steps, and at the end
of each epoch to read the current genotype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import nn

__all__ = ["Strategy", "LossFn"]

LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class Strategy(ABC):
    Config: ClassVar[type]
    name: ClassVar[str]

    def __init__(self, config: Any, seed: int) -> None:
        self.config = config
        self.seed = seed
        # Set by the search loop: sums architecture gradients over ranks (a no-op for one process).
        self.reduce_gradients: Callable[[list[nn.Parameter]], None] = lambda parameters: None

    @abstractmethod
    def make_block(self, label: str, candidates: list[str], make: Callable[[str], nn.Module]) -> nn.Module:
        """Block factory handed to the search space: wrap all candidates of ``label``."""

    @abstractmethod
    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        """Create architecture parameters once every block exists."""

    def before_weight_step(self) -> None:
        """Choose what the next weight step trains (e.g. sample a path)."""

    def wants_arch_step(self, epoch: int, step: int) -> bool:
        return False

    def arch_step(self, loss_fn: LossFn, batch: dict[str, torch.Tensor]) -> float:
        """One architecture update on a held-out batch; returns its loss."""
        raise NotImplementedError

    @abstractmethod
    def genotype(self) -> dict[str, str]:
        """The current best architecture as ``{label: op}``."""

    @abstractmethod
    def probabilities(self) -> dict[str, dict[str, float]]:
        """Current per-label op probabilities (for logs and TensorBoard)."""

    @contextmanager
    @abstractmethod
    def fixed(self, choices: Mapping[str, str]) -> Iterator[None]:
        """Run the supernet as the single architecture ``choices`` inside the block."""
        yield

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...
