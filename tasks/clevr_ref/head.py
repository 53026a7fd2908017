"""The CLEVR-Ref+ head: one foreground logit per grid cell, from the cell and the pooled expression.

The expression is pooled with MmNas's AttFlat (as ``FusionHead`` pools text); each cell of the
backbone's image stream (already conditioned on the text by the searched blocks) is joined with
it as ``[cell, text, cell * text]`` and a small MLP scores it, the product giving a direct
matching term, as ``FusionHead``'s "product" fusion does.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import AttentionFlatten

__all__ = ["GridMaskHead"]


class GridMaskHead(nn.Module):
    """Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLP.
        dropout: dropout in AttFlat and the cell MLP.
    """

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.text_pool = AttentionFlatten(hidden, flat_mlp, hidden, 1, dropout)
        self.cell = nn.Linear(hidden, hidden)
        self.score = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        # text: (B, T, H); image: (B, N, H) -> logits (B, N), one per cell
        pooled = self.text_pool(text, text_keep).unsqueeze(1).expand(-1, image.shape[1], -1)  # (B, N, H)
        cells = self.cell(image)  # (B, N, H)
        logits = self.score(torch.cat([cells, pooled, cells * pooled], dim=-1)).squeeze(-1)  # (B, N)
        return logits.masked_fill(~image_keep, torch.finfo(logits.dtype).min)
