"""The ``ray`` strategy of ``nas tune``: its settings, registered like any strategy.

Every trial of a Ray Tune sweep samples a genotype (and optionally a learning
rate) with Optuna's sampler, retrains it for ``trial_epochs`` epochs through the
one retrain loop and reports each epoch's validation metric to the ASHA
scheduler. The sweep itself is ``nas.tune``; this module only declares the
``strategy.*`` keys so they validate like any other section. Ray is imported
only when a sweep runs (it is the optional extra ``[tune]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from nas.errors import UserError
from nas.registry import STRATEGIES

__all__ = ["RayStrategy", "RayStrategyConfig"]


@dataclass
class RayStrategyConfig:
    name: str = "ray"
    trials: int = 16  # trials of the sweep (each samples one architecture)
    trial_epochs: int = 3  # most epochs a trial trains (ASHA stops weak trials earlier)
    concurrency: int = 0  # trials running at once; 0: as many as the cluster's CPUs (GPUs) hold
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str = "asha"  # asha | fifo (every trial trains trial_epochs)
    grace_period: int = 1  # ASHA: epochs every trial trains before it may be stopped
    reduction_factor: int = 3  # ASHA: keep the best 1/reduction_factor of the trials at each rung
    sampler: str = "tpe"  # tpe | random: Optuna's sampler, as Ray Tune's search algorithm, seeded from --seed
    sampler_startup_trials: int = 8  # tpe: random trials before the model of good trials is used
    tune_lr: bool = False  # also sample train.lr, log-uniformly in lr_range
    lr_range: list[float] = field(default_factory=lambda: [1e-5, 1e-3])
    max_failures: int = 2  # a trial whose process dies is restarted from its last checkpoint this often
    keep_best: int = 3  # genotypes of the best trials written to <out>/best/
    address: str | None = None  # null: start a local Ray instance; auto or HOST:PORT: join that cluster


@STRATEGIES.register("ray")
class RayStrategy:
    Config = RayStrategyConfig
    name = "ray"
    command: ClassVar[str] = "tune"  # run by 'nas tune'; 'nas search' reaches __init__ and is told so

    def __init__(self, config: Any, seed: int) -> None:
        raise UserError("strategy.name: 'ray' is the Ray Tune sweep; run it with 'nas tune', "
                        "not the one-shot search loop")
