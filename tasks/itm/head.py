"""MmNas's matching head: a cross-encoder score for one image-caption pair."""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import AttentionFlatten, McanLayerNorm

__all__ = ["MatchingHead"]


class MatchingHead(nn.Module):
    """``Linear(LN(AttFlat(text) + AttFlat(image)))`` -> one logit per pair.

    Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLPs.
        dropout: dropout in AttFlat.
    """

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1) -> None:
        super().__init__()
        out = 2 * hidden
        self.text_pool = AttentionFlatten(hidden, flat_mlp, out, 1, dropout)
        self.image_pool = AttentionFlatten(hidden, flat_mlp, out, 1, dropout)
        self.norm = McanLayerNorm(out)
        self.score = nn.Linear(out, 1)

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        # text: (B, T, H); image: (B, R, H) -> logits (B,)
        fused = self.text_pool(text, text_keep) + self.image_pool(image, image_keep)  # (B, 2H)
        return self.score(self.norm(fused)).squeeze(-1)
