"""The module network: program generator + execution engine, trained in IEP-Ref's three stages.

- ``pg``: only the generator learns, by cross-entropy on the ground-truth programs that may be used
  (``program_known``); the engine is frozen and runs on the generator's greedy programs.
- ``ee``: only the engine learns, on the generator's greedy programs (``programs: predicted``) or
  on the ground-truth programs where they may be used (``programs: ground_truth``); the generator
  is frozen.
- ``joint``: in training the engine runs on *sampled* programs and learns from the task loss, and
  the generator learns by REINFORCE with the expression's reward against a moving-average
  baseline (a buffer, so checkpoints carry it); evaluation uses greedy programs.

Evaluation always follows ``programs`` (``ground_truth``: the ground-truth programs, which every
evaluation expression may use). The generator's and REINFORCE's losses reach the shared trainer
through ``auxiliary_loss()``, read after each forward. The network returns one logit per cell
(B, N) itself, so the task's head is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import UserError
from search_spaces.modules.engine import ExecutionEngine
from search_spaces.modules.generator import ProgramGenerator
from search_spaces.modules.reinforce import iou_reward, loss_reward, reinforce_loss, update_baseline
from search_spaces.simrec.grid import grid_shape

__all__ = ["ModuleNetwork", "STAGES", "PROGRAMS", "REWARDS"]

STAGES = ("pg", "ee", "joint")
PROGRAMS = ("ground_truth", "predicted")
REWARDS = {"iou": iou_reward, "loss": loss_reward}


class ModuleNetwork(nn.Module):
    """Args:
        generator: the program generator.
        engine: the execution engine.
        stage: pg, ee or joint (see the module docstring).
        programs: ground_truth or predicted: what the engine executes outside joint training.
        reward: iou or loss (minus the per-cell BCE), REINFORCE's reward in joint training.
        baseline_decay: the moving-average baseline's decay per step.
    """

    # What train.init copies from a previous stage's checkpoint (nas/pretrained.py).
    init_prefixes = ("generator.", "engine.", "baseline")

    def __init__(self, generator: ProgramGenerator, engine: ExecutionEngine, stage: str, programs: str,
                 reward: str, baseline_decay: float) -> None:
        super().__init__()
        self.generator = generator
        self.engine = engine
        self.stage, self.programs, self.reward, self.baseline_decay = stage, programs, reward, baseline_decay
        self.register_buffer("baseline", torch.zeros(()))
        frozen = {"pg": self.engine, "ee": self.generator}.get(stage)
        if frozen is not None:
            frozen.requires_grad_(False)
        self._auxiliary: torch.Tensor | None = None

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The last training forward's generator loss (summed over its expressions), or None."""
        return self._auxiliary

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._auxiliary = None
        grid = _grid(batch)  # (B, C, H, W)
        tokens = batch["tokens"]
        if self.stage == "joint" and self.training:
            programs, log_probs = self.generator.decode(tokens, sample=True)  # (B, L), (B,)
            logits = self.engine(grid, programs)  # (B, N)
            reward = REWARDS[self.reward](logits.detach(), batch["target"])  # (B,)
            self._auxiliary = reinforce_loss(log_probs, reward, self.baseline)
            update_baseline(self.baseline, reward, self.baseline_decay)
            return logits
        programs = self.programs_to_run(batch)
        if self.stage == "pg":
            with torch.no_grad():  # the engine is frozen in this stage
                logits = self.engine(grid, programs)
            if self.training:
                known = batch["program_known"].to(grid.dtype)
                self._auxiliary = -(self.generator.log_likelihood(tokens, batch["program"]) * known).sum()
            return logits
        return self.engine(grid, programs)

    def programs_to_run(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) programs for the engine: ground truth where it may be used (``programs: ground_truth``),
        the generator's greedy decoding elsewhere."""
        truth, known = batch["program"], batch["program_known"]
        if self.programs == "ground_truth" and bool(known.all()):
            return truth
        with torch.no_grad():
            predicted, _ = self.generator.decode(batch["tokens"], sample=False)
        if self.programs == "predicted" or not bool(known.any()):
            return predicted
        width = max(truth.shape[1], predicted.shape[1])
        truth, predicted = F.pad(truth, (0, width - truth.shape[1])), F.pad(predicted, (0, width - predicted.shape[1]))
        return torch.where(known.unsqueeze(1), truth, predicted)


def _grid(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's cells as a (B, C, H, W) map, the layout read from the cell boxes."""
    features, boxes = batch["features"], batch["boxes"]  # (B, N, C), (B, N, 4)
    keep = torch.arange(features.shape[1], device=features.device) < batch["num_regions"].unsqueeze(1)
    shape = grid_shape(boxes, keep)
    if shape is None:
        raise UserError("space.name=modules: the batch's regions form no grid of cells; the module network runs on "
                        "grid features (task clevr_ref)")
    rows, cols = shape
    return features.transpose(1, 2).reshape(features.shape[0], features.shape[2], rows, cols)
