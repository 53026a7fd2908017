"""The ``nni`` strategy: NNI 3.0's one-shot strategies, registered like any strategy.

``nas search --strategy nni strategy.algorithm=darts|gumbel|proxyless|random`` hands the space
(as an NNI model space), the task's loss and its data split to ``nni.nas.strategy.DARTS``,
``GumbelDARTS``, ``Proxyless`` or ``RandomOneShot``; the search is ``nas.interop.nni_search``.
This module only declares the ``strategy.*`` keys (so they validate like any other section) and
the ``own_search`` marker that ``nas search`` dispatches on. NNI is the optional extra ``[nni]``, imported
only when a search runs, so registering costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nas.errors import UserError
from nas.interop.nni_genotype import NNI_STRATEGIES
from nas.registry import STRATEGIES

__all__ = ["NniStrategy", "NniStrategyConfig"]


@dataclass
class NniStrategyConfig:
    name: str = "nni"
    algorithm: str = "darts"  # darts | gumbel | proxyless | random (NNI's DARTS, GumbelDARTS, Proxyless, RandomOneShot)
    split_portion: float = 0.5  # weights train on the first part of train_split; architecture steps use the rest
    arch_lr: float = 3e-4  # NNI's arc_learning_rate (its Adam: betas (0.5, 0.999), weight decay 1e-3)
    arch_start_epoch: int = 0  # NNI's warmup_epochs: epochs of weight training before any architecture step
    tau_max: float = 1.0  # gumbel: NNI's temperature falls linearly from tau_max ...
    tau_min: float = 0.33  # ... to tau_min over train.epochs (NNI's defaults)


@STRATEGIES.register("nni")
class NniStrategy:
    Config = NniStrategyConfig
    name = "nni"
    # nas search calls check() before making the run directory, then run() instead of the one-shot loop.
    own_search: ClassVar[bool] = True

    def __init__(self, config: Any, seed: int) -> None:
        # Reached only when something hands this strategy to the one-shot loop (nas.search).
        raise UserError("strategy.name: 'nni' runs NNI's own search; run it with 'nas search' "
                        "(nas.interop.nni_search.run_nni_search), not the one-shot search loop")

    @staticmethod
    def check(config: Any) -> None:
        """Refuse what the NNI search cannot do, before a run directory is made."""
        from nas.interop.nni_env import require_nni

        cfg, train = config.strategy, config.train
        if cfg.algorithm not in NNI_STRATEGIES:
            raise UserError(f"strategy.algorithm: unknown value '{cfg.algorithm}'. Valid: {', '.join(NNI_STRATEGIES)}")
        if not 0.0 < cfg.split_portion < 1.0:
            raise UserError(f"strategy.split_portion must be between 0 and 1, got {cfg.split_portion}")
        if cfg.arch_start_epoch < 0:
            raise UserError(f"strategy.arch_start_epoch must be >= 0, got {cfg.arch_start_epoch}")
        if not cfg.tau_max >= cfg.tau_min >= 0:
            raise UserError(f"strategy.tau_max / tau_min: NNI needs tau_max >= tau_min >= 0, got "
                            f"{cfg.tau_max} / {cfg.tau_min}")
        # NNI's one-shot modules take their own optimizer steps (one batch per step, no weight average)
        # and Lightning keeps no checkpoint here.
        for key, value, default in (("accumulate", train.accumulate, 1), ("ema_decay", train.ema_decay, 0.0),
                                    ("checkpoint_every", train.checkpoint_every, 0)):
            if value != default:
                raise UserError(f"train.{key}={value}: not supported with strategy nni (NNI steps the optimizer "
                                f"itself); leave it at {default}")
        require_nni()

    @staticmethod
    def run(config: Any, run_dir: Path, progress: bool) -> Any:
        from nas.interop.nni_search import run_nni_search

        return run_nni_search(config, run_dir, progress=progress)
