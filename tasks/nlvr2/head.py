"""The NLVR2 head: pool each (sentence, image) row, join the two rows of a pair, classify.

Pooling is MmNas/MCAN's (``FusionHead``'s AttFlat of text and image, summed, LayerNorm), by
default with their element-wise product added, as the matching task does (``task.fusion``):
every NLVR2 label is a match between words and regions, and the product is a direct term for
it where the plain sum leaves it to guided attention alone. The pair classifier is LXMERT's
NLVR2 one: Linear(2D, D'), GeLU, LayerNorm, Linear(D', 1) over the concatenated [left, right]
vectors, one logit of "True" per example.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.heads import FusionHead

__all__ = ["PairHead"]


class PairHead(FusionHead):
    """Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLP (512 in MmNas).
        dropout: dropout in the AttFlat MLPs.
        fusion: "sum" (MmNas: pooled text + pooled image) or "product" (their product added too).
    """

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1, fusion: str = "product") -> None:
        super().__init__(hidden, flat_mlp, num_outputs=1, dropout=dropout, fusion=fusion)

    def make_classifier(self, pooled: int, num_outputs: int) -> nn.Module:
        # LXMERT's NLVR2 classifier over the joined [left, right] vectors
        return nn.Sequential(nn.Linear(2 * pooled, pooled), nn.GELU(), nn.LayerNorm(pooled),
                             nn.Linear(pooled, num_outputs))

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        # text: (2B, T, H); image: (2B, N, H); rows 2i and 2i+1 are example i's left and right image
        if text.shape[0] % 2:
            raise ValueError(f"an NLVR2 batch has two rows per example, got {text.shape[0]} rows")
        row = self.pool(text, text_keep, image, image_keep)  # (2B, 2H)
        pair = row.reshape(row.shape[0] // 2, -1)  # (B, 4H): [left, right]
        return self.classifier(pair).squeeze(1)  # (B,) logit of "True"
