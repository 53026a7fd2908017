"""One line per trial event in the driver's log, instead of Ray's periodic status tables."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

__all__ = ["TrialLines"]

log = logging.getLogger("nas.tune")


class TrialLines(Callback):
    def __init__(self, primary: str, total: int, quiet: bool) -> None:
        self.primary, self.total, self.quiet = primary, total, quiet
        self.finished = 0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.quiet:
            return
        node = str(result.get("node_id") or "?")[:8]
        log.info("trial %s epoch %s: %s %.2f (node %s, attempt %s)", trial.trial_id, result.get("epoch"),
                 self.primary, result.get(self.primary, float("nan")), node, result.get("attempt"))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        last = trial.last_result or {}
        log.info("trial %s done after %s epoch(s): %s %.2f [%d/%d trials finished]", trial.trial_id,
                 last.get("epoch", 0), self.primary, last.get(self.primary, float("nan")), self.finished, self.total)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("trial %s: its process failed; Ray restarts it from its last checkpoint", trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        log.warning("trial %s failed for good (strategy.max_failures reached); see its error in %s",
                    trial.trial_id, trial.path)
