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

from nas.layers import AttentionFlatten, McanLayerNorm

__all__ = ["PairHead"]


class PairHead(nn.Module):
    """Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLP (512 in MmNas).
        dropout: dropout in the AttFlat MLPs.
        fusion: "sum" (MmNas: pooled text + pooled image) or "product" (their product added too).
    """

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1, fusion: str = "product") -> None:
        super().__init__()
        if fusion not in ("sum", "product"):
            raise ValueError(f"fusion must be 'sum' or 'product', got {fusion!r}")
        self.fusion = fusion
        pooled = 2 * hidden
        self.text_pool = AttentionFlatten(hidden, flat_mlp, pooled, 1, dropout)
        self.image_pool = AttentionFlatten(hidden, flat_mlp, pooled, 1, dropout)
        self.norm = McanLayerNorm(pooled)
        self.classifier = nn.Sequential(nn.Linear(2 * pooled, pooled), nn.GELU(), nn.LayerNorm(pooled),
                                        nn.Linear(pooled, 1))

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        # text: (2B, T, H); image: (2B, N, H); rows 2i and 2i+1 are example i's left and right image
        if text.shape[0] % 2:
            raise ValueError(f"an NLVR2 batch has two rows per example, got {text.shape[0]} rows")
        pooled_text, pooled_image = self.text_pool(text, text_keep), self.image_pool(image, image_keep)  # (2B, 2H)
        fused = pooled_text + pooled_image
        if self.fusion == "product":
            fused = fused + pooled_text * pooled_image
        row = self.norm(fused)  # (2B, 2H)
        pair = row.reshape(row.shape[0] // 2, -1)  # (B, 4H): [left, right]
        return self.classifier(pair).squeeze(1)  # (B,) logit of "True"
