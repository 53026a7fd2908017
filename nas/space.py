"""The search-space protocol: labelled choices, and one builder for supernet and child.

A space never owns architecture parameters. It declares ``choices()`` (label ->
candidate op names) and builds its network from a *block factory*: the
retraining engine's factory returns the one chosen op, a strategy's factory
wraps all candidates in its own mixed op. So supernet and child are built from
the same op modules by the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from itertools import groupby
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from nas.genotype import Genotype, check_choices
from nas.errors import UserError

__all__ = ["SearchSpace", "BlockFactory", "MakeOp", "fixed_block_factory", "run_length"]

MakeOp = Callable[[str], nn.Module]
# (label, candidate op names, op constructor) -> the module placed at that label
BlockFactory = Callable[[str, list[str], MakeOp], nn.Module]


class SearchSpace(ABC):
    """Base class of registered search spaces."""

    Config: ClassVar[type]
    name: ClassVar[str]
    # Ops without weights (skip, pooling, zero). One-shot strategies can cap how many of them a
    # genotype holds (``strategy.max_parameter_free``): DARTS-like searches drift towards them.
    parameter_free_ops: ClassVar[frozenset[str]] = frozenset()
    # Whether build_model can drive a head that writes text (``Task.needs_generation``): decoding
    # needs a model that runs a causal mask step by step, which classifier backbones do not.
    can_generate: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def choices(self) -> dict[str, list[str]]:
        """Every searchable label with its candidate op names, in network order."""

    def prior(self) -> dict[str, str] | None:
        """A reference architecture that strategies may bias their initial logits towards."""
        return None

    @classmethod
    def config_from_choices(cls, choices: Mapping[str, str]) -> dict[str, Any]:
        """Space settings implied by a genotype (e.g. block counts), applied before user layers."""
        return {}

    @abstractmethod
    def build_model(self, meta: Any, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        """The full network: input embedding, searched backbone and the task's head."""

    @abstractmethod
    def describe(self, choices: Mapping[str, str]) -> str:
        """A one-line human summary of an architecture."""

    def validate(self, genotype: Genotype, source: str = "genotype") -> None:
        if genotype.space != self.name:
            raise UserError(f"{source}: genotype is for search space '{genotype.space}', "
                            f"but this run uses '{self.name}'")
        check_choices(genotype.choices, self.choices(), source)


def fixed_block_factory(choices: Mapping[str, str]) -> BlockFactory:
    """The retraining engine's factory: build only the chosen op at each label."""

    def build(label: str, candidates: list[str], make: MakeOp) -> nn.Module:
        return make(choices[label])

    return build


def run_length(names: list[str], separator: str = "", joiner: str = " ", empty: str = "") -> str:
    """``["SA", "SA", "FFN"]`` -> ``"SAx2 FFN"``: repeated ops counted, for ``describe()``."""
    parts = []
    for name, group in groupby(names):
        count = len(list(group))
        parts.append(f"{name}{separator}x{count}" if count > 1 else name)
    return joiner.join(parts) or empty
