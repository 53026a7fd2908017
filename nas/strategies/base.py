"""The strategy protocol used by the shared search loop (``nas.search``).

A strategy owns the architecture parameters and its mixed ops. The loop owns
the data, the network weights and their optimizer, and calls the strategy at
fixed points: at the start of each epoch, before each weight step, for
architecture steps, at the end of each epoch to read the current genotype, and
once after the last epoch's training (``finish``). Every hook but the abstract
ones has a default that does nothing, so a strategy overrides only what it uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import nn

from nas.supernet import GatedMixedOp

__all__ = ["Strategy", "SupernetStrategy", "LossFn", "Evaluate", "WeightAccess", "param_key"]

LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]
# Scores an architecture ({label: op}) on the held-out split with the current weights; higher is better.
Evaluate = Callable[[Mapping[str, str]], float]


@dataclass
class WeightAccess:
    """What an architecture step may see of the weights (second-order DARTS).

    The strategy may change ``parameters`` in place but must restore them exactly.
    """

    parameters: list[nn.Parameter]  # the trainable network weights, in the optimizer's order
    optimizer: torch.optim.Optimizer  # the weight optimizer (for its learning rate and weight decay)
    batch: dict[str, torch.Tensor]  # one batch of the weight split, on the device


class Strategy(ABC):
    Config: ClassVar[type]
    name: ClassVar[str]

    def __init__(self, config: Any, seed: int) -> None:
        self.config = config
        self.seed = seed
        # Set by the search loop: sums architecture gradients over ranks (a no-op for one process).
        self.reduce_gradients: Callable[[list[nn.Parameter]], None] = lambda parameters: None
        # Set by the search loop from the space: ops without weights, for strategies that cap them.
        self.parameter_free_ops: frozenset[str] = frozenset()

    @abstractmethod
    def make_block(self, label: str, candidates: list[str], make: Callable[[str], nn.Module]) -> nn.Module:
        """Block factory handed to the search space: wrap all candidates of ``label``."""

    @abstractmethod
    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        """Create architecture parameters once every block exists."""

    def begin_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called at the start of every epoch (0-based), resumed ones included: e.g. anneal a temperature.

        Must depend only on its arguments, so that a resumed run sets the same state.
        """

    def before_weight_step(self) -> None:
        """Choose what the next weight step trains (e.g. sample a path)."""

    def wants_arch_step(self, epoch: int, step: int) -> bool:
        return False

    def arch_step(self, loss_fn: LossFn, batch: dict[str, torch.Tensor]) -> float:
        """One architecture update on a held-out batch; returns its loss."""
        raise NotImplementedError

    @property
    def wants_weight_batch(self) -> bool:
        """Whether architecture steps also need a weight batch and the weights (``arch_step_with_weights``).

        When true, the loop draws exactly one weight-split batch per architecture step.
        """
        return False

    def arch_step_with_weights(self, loss_fn: LossFn, batch: dict[str, torch.Tensor], weights: WeightAccess) -> float:
        """The richer architecture step the loop calls when ``wants_weight_batch`` is true."""
        return self.arch_step(loss_fn, batch)

    def finish(self, evaluate: Evaluate) -> dict[str, str] | None:
        """Called once after the last epoch's weight training, before its genotype is written.

        Returns the final architecture, or None to keep ``genotype()``. ``evaluate`` scores an
        architecture on the held-out split with the current weights (e.g. for SPOS's evolution).
        """
        return None

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


def param_key(label: str) -> str:
    # ParameterDict keys cannot contain '.', and labels use '/'; keep them readable.
    return label.replace("/", "__")


class SupernetStrategy(Strategy):
    """A strategy whose blocks are ``GatedMixedOp``s (mmnas, darts, gdas, spos).

    It owns the blocks and one random generator, seeded once, so path sampling is reproducible
    and identical on every rank; ``fixed`` runs the chosen op of each block, as the child would.
    """

    def __init__(self, config: Any, seed: int) -> None:
        super().__init__(config, seed)
        self.blocks: dict[str, GatedMixedOp] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def make_block(self, label: str, candidates: list[str], make: Callable[[str], nn.Module]) -> nn.Module:
        block = GatedMixedOp(label, {name: make(name) for name in candidates})
        self.blocks[label] = block
        return block

    @contextmanager
    def fixed(self, choices: Mapping[str, str]) -> Iterator[None]:
        saved = {label: block.mode() for label, block in self.blocks.items()}
        for label, block in self.blocks.items():
            block.run_single(block.names.index(choices[label]))
        try:
            yield
        finally:
            for label, block in self.blocks.items():
                block.set_mode(saved[label])
