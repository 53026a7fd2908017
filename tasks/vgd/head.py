"""MmNas's grounding head: every region is scored against the pooled expression."""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import AttentionFlatten, McanLayerNorm

__all__ = ["GroundingHead"]


class GroundingHead(nn.Module):
    """``LN(AttFlat(text) + Linear(region))`` -> a score and four box deltas per region.

    Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLP.
        dropout: dropout in AttFlat.
    """

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1) -> None:
        super().__init__()
        out = 2 * hidden
        self.text_pool = AttentionFlatten(hidden, flat_mlp, out, 1, dropout)
        self.region = nn.Linear(hidden, out)
        self.norm = McanLayerNorm(out)
        self.score = nn.Linear(out, 1)
        self.regress = nn.Linear(out, 4)

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # text: (B, T, H); image: (B, N, H) -> scores (B, N), deltas (B, N, 4)
        fused = self.norm(self.text_pool(text, text_keep).unsqueeze(1) + self.region(image))  # (B, N, 2H)
        scores = self.score(fused).squeeze(-1)
        scores = scores.masked_fill(~image_keep, torch.finfo(scores.dtype).min)  # -1e9 overflows fp16
        return scores, self.regress(fused)
