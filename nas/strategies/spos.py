"""SPOS: uniform single-path weight training, then an evolutionary search over subnets.

Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", ECCV 2020 (https://arxiv.org/abs/1904.00420). There are no
architecture parameters: every weight step trains one path drawn uniformly per
block. After the last epoch's training, an evolutionary search scores subnets
with the inherited supernet weights on the held-out split:

- a random population of ``population`` distinct subnets;
- each generation keeps the ``parents`` best subnets scored so far, makes up to
  ``mutations`` children by redrawing each block with probability
  ``mutation_prob`` and up to ``crossovers`` children by taking each block from
  one of two parents, fills the rest with random subnets, never one already
  scored; after ``generations`` generations the best subnet is the genotype.

With ``max_parameter_free`` set, subnets over the cap are never drawn (SPOS's
constraint handling). Until the evolution has run (an interrupted search), the
genotype is the space's reference architecture, or each block's first op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from nas.errors import UserError
from nas.registry import STRATEGIES
from nas.strategies.base import Evaluate, SupernetStrategy
from nas.strategies.oneshot import OneShotConfig, cap_parameter_free, check_one_shot_config

__all__ = ["SposStrategy", "SposConfig", "evolve"]

log = logging.getLogger("nas.strategies")


@dataclass
class SposConfig(OneShotConfig):
    name: str = "spos"
    split_portion: float = 0.8  # held out only for the final evolution, so most data trains weights
    population: int = 8  # subnets scored per generation (SPOS: 50)
    parents: int = 4  # best subnets kept as parents (SPOS: 10)
    mutations: int = 4  # children by mutation per generation (SPOS: 25)
    crossovers: int = 4  # children by crossover per generation (SPOS: 25)
    mutation_prob: float = 0.1  # per-block probability of redrawing the op in a mutation (SPOS: 0.1)
    generations: int = 3  # (SPOS: 20)


@dataclass
class Evolution:
    """The outcome of ``evolve``: the best subnet and every subnet scored, in scoring order."""

    best: dict[str, str]
    score: float
    scored: list[tuple[dict[str, str], float]]


def evolve(candidates: Mapping[str, list[str]], evaluate: Evaluate, config: SposConfig, generator: torch.Generator,
           legal: Callable[[Mapping[str, str]], bool] = lambda choices: True) -> Evolution:
    """SPOS's evolutionary search over ``{label: ops}``; draws only from ``generator``.

    Ties between scores go to the subnet scored first, so the result is reproducible.
    """
    labels = list(candidates)
    scores: dict[tuple[str, ...], float] = {}  # insertion order = scoring order

    def draw(count: int) -> int:
        return int(torch.randint(count, (1,), generator=generator))

    def chance() -> float:
        return float(torch.rand(1, generator=generator))

    def fill(children: list[tuple[str, ...]], limit: int, make: Callable[[], tuple[str, ...]]) -> None:
        # Bounded tries: a small space may hold fewer new legal subnets than asked for.
        for _ in range(10 * max(limit, 1)):
            if len(children) >= limit:
                return
            child = make()
            if child not in scores and child not in children and legal(dict(zip(labels, child))):
                children.append(child)

    def random_subnet() -> tuple[str, ...]:
        return tuple(candidates[label][draw(len(candidates[label]))] for label in labels)

    def ranked() -> list[tuple[str, ...]]:
        order = {key: index for index, key in enumerate(scores)}
        return sorted(scores, key=lambda key: (-scores[key], order[key]))

    population: list[tuple[str, ...]] = []
    fill(population, config.population, random_subnet)
    for generation in range(config.generations):
        for subnet in population:
            scores[subnet] = float(evaluate(dict(zip(labels, subnet))))
        top = ranked()[:config.parents]
        log.info("spos evolution %d/%d: best held-out score %.2f, %d subnets scored", generation + 1,
                 config.generations, scores[top[0]] if top else float("nan"), len(scores))
        if generation == config.generations - 1 or not top:
            break

        def mutate() -> tuple[str, ...]:
            parent = top[draw(len(top))]
            return tuple(candidates[label][draw(len(candidates[label]))] if chance() < config.mutation_prob else op
                         for label, op in zip(labels, parent))

        def cross() -> tuple[str, ...]:
            first, second = top[draw(len(top))], top[draw(len(top))]
            return tuple(a if chance() < 0.5 else b for a, b in zip(first, second))

        children: list[tuple[str, ...]] = []
        fill(children, config.mutations, mutate)
        fill(children, len(children) + config.crossovers, cross)
        fill(children, config.population, random_subnet)
        if not children:
            break  # every legal subnet of a small space is scored
        population = children
    if not scores:
        raise UserError("strategy: the evolution found no subnet within strategy.max_parameter_free")
    best = ranked()[0]
    return Evolution(best=dict(zip(labels, best)), score=scores[best],
                     scored=[(dict(zip(labels, key)), value) for key, value in scores.items()])


@STRATEGIES.register("spos")
class SposStrategy(SupernetStrategy):
    Config = SposConfig
    name = "spos"

    def __init__(self, config: SposConfig, seed: int) -> None:
        super().__init__(config, seed)
        check_one_shot_config(config)
        for key in ("population", "generations"):
            if getattr(config, key) < 1:
                raise UserError(f"strategy.{key} must be >= 1, got {getattr(config, key)}")
        for key in ("parents", "mutations", "crossovers"):
            if getattr(config, key) < 0:
                raise UserError(f"strategy.{key} must be >= 0, got {getattr(config, key)}")
        if config.parents < 1 and (config.mutations or config.crossovers):
            raise UserError("strategy.parents must be >= 1 when there are mutations or crossovers")
        if not 0.0 <= config.mutation_prob <= 1.0:
            raise UserError(f"strategy.mutation_prob must be in [0, 1], got {config.mutation_prob}")
        self.prior: dict[str, str] | None = None
        self.best: dict[str, str] | None = None
        self.best_score: float | None = None

    def attach(self, prior: Mapping[str, str] | None, device: torch.device) -> None:
        if prior and all(prior.get(label) in block.names for label, block in self.blocks.items()):
            self.prior = {label: prior[label] for label in self.blocks}

    def before_weight_step(self) -> None:
        for block in self.blocks.values():
            block.run_single(int(torch.randint(len(block.names), (1,), generator=self.generator)))

    def legal(self, choices: Mapping[str, str]) -> bool:
        cap = self.config.max_parameter_free
        return cap is None or sum(op in self.parameter_free_ops for op in choices.values()) <= cap

    def finish(self, evaluate: Evaluate) -> dict[str, str] | None:
        candidates = {label: list(block.names) for label, block in self.blocks.items()}
        result = evolve(candidates, evaluate, self.config, self.generator, self.legal)
        self.best, self.best_score = result.best, result.score
        return self.genotype()

    def genotype(self) -> dict[str, str]:
        if self.best is not None:
            choices = dict(self.best)
        elif self.prior is not None:
            choices = dict(self.prior)
        else:
            choices = {label: block.names[0] for label, block in self.blocks.items()}
        return cap_parameter_free(choices, self.probabilities(), self.parameter_free_ops,
                                  self.config.max_parameter_free)

    def probabilities(self) -> dict[str, dict[str, float]]:
        # Weight steps sample uniformly: that is the only distribution SPOS has.
        return {label: {name: 1.0 / len(block.names) for name in block.names} for label, block in self.blocks.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "best": self.best, "best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())  # a CPU generator, wherever the checkpoint was mapped
        self.best, self.best_score = state.get("best"), state.get("best_score")
