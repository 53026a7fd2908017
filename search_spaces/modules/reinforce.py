"""REINFORCE for the program generator, with IEP's moving-average reward baseline."""

from __future__ import annotations

import torch

__all__ = ["iou_reward", "loss_reward", "reinforce_loss", "update_baseline"]


def iou_reward(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each expression's IoU between its predicted cells (logit > 0) and the covered share of each cell."""
    # logits, target: (B, N) -> (B,)
    predicted = (logits > 0).to(target.dtype)
    intersection = (predicted * target).sum(1)
    union = (predicted + target - predicted * target).sum(1)
    return intersection / union.clamp_min(1e-6)


def loss_reward(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus each expression's per-cell BCE (mean over cells)."""
    # logits, target: (B, N) -> (B,)
    return -torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)


def reinforce_loss(log_probs: torch.Tensor, reward: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """``-sum_b (reward_b - baseline) * log p(program_b)``: its gradient raises the probability of
    programs that did better than the baseline and lowers the others'."""
    # log_probs: (B,) with gradient; reward: (B,); baseline: () -> ()
    advantage = (reward - baseline).detach()
    return -(advantage * log_probs).sum()


@torch.no_grad()
def update_baseline(baseline: torch.Tensor, reward: torch.Tensor, decay: float) -> None:
    """In place: ``baseline <- decay * baseline + (1 - decay) * mean(reward)``."""
    baseline.mul_(decay).add_((1.0 - decay) * reward.mean().to(baseline.dtype))
