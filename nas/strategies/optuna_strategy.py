"""The multi-trial ``optuna`` strategy: its settings, registered like any strategy.

Unlike one-shot strategies it owns no supernet: every trial samples one
architecture, trains it briefly as a fixed network and reports its validation
metric to an Optuna study. The search itself is ``nas.multitrial``; this module
only declares the ``strategy.*`` keys (so they validate like any other section)
and the ``multi_trial`` marker that ``nas search`` dispatches on. Optuna is
imported only when a search runs, so registering costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from nas.errors import UserError
from nas.registry import STRATEGIES

__all__ = ["OptunaStrategy", "OptunaStrategyConfig"]


@dataclass
class OptunaStrategyConfig:
    name: str = "optuna"
    trials: int = 20  # COMPLETE + PRUNED trials the study should hold; a rerun runs only the missing ones
    trial_epochs: int = 3  # training epochs of each trial (train.epochs is not used)
    sampler: str = "tpe"  # tpe | random, seeded from --seed
    sampler_startup_trials: int = 10  # tpe: random trials before the model of good trials is used
    pruner: str = "median"  # median | hyperband | none (multi-objective studies cannot prune)
    pruner_startup_trials: int = 5  # median: no pruning until this many trials have finished
    storage: str | None = None  # null: <run dir>/optuna.journal; a file path: a journal; sqlite:///... etc.
    study_name: str | None = None  # null: vlnas-<task>-<space>
    # The task's validation metric ("metric" or its name, e.g. accuracy; maximised) first, then
    # optionally "params" (parameter count) and/or "latency" (ms per eval batch; both minimised).
    objectives: list[str] = field(default_factory=lambda: ["metric"])
    tune_lr: bool = False  # also sample train.lr, log-uniformly in lr_range
    lr_range: list[float] = field(default_factory=lambda: [1e-5, 1e-3])
    timeout: float | None = None  # seconds after which no new trial starts (the running one finishes)
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats in the storage
    grace_period: int = 180  # a trial of another machine without a heartbeat for this long is dead


@STRATEGIES.register("optuna")
class OptunaStrategy:
    Config = OptunaStrategyConfig
    name = "optuna"
    multi_trial: ClassVar[bool] = True  # nas search runs nas.multitrial instead of the one-shot loop

    def __init__(self, config: Any, seed: int) -> None:
        # Reached only when something hands this strategy to the one-shot loop (nas.search).
        raise UserError("strategy.name: 'optuna' is a multi-trial strategy; run it with 'nas search' "
                        "(nas.multitrial.run_multitrial_search), not the one-shot search loop")
