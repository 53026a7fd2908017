"""Layers shared by search spaces and task heads (MCAN/MmNas conventions)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["McanLayerNorm", "AttentionFlatten"]


class McanLayerNorm(nn.Module):
    """MCAN's LayerNorm: unbiased std with eps added to the std (not the variance).

    Kept instead of ``nn.LayerNorm`` so published MmNas/MCAN numbers stay comparable.
    """

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


class AttentionFlatten(nn.Module):
    """MCAN's AttFlat: attention-weighted pooling of a sequence into one vector.

    Args:
        hidden: input feature size.
        mlp_size: hidden size of the MLP that scores positions.
        out_size: size of the pooled output.
        glimpses: number of attention maps, concatenated before the output layer.
        dropout: dropout inside the scoring MLP.
    """

    def __init__(self, hidden: int, mlp_size: int, out_size: int, glimpses: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, mlp_size), nn.ReLU(inplace=True),
                                   nn.Dropout(dropout), nn.Linear(mlp_size, glimpses))
        self.merge = nn.Linear(hidden * glimpses, out_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: (B, L, H); keep: (B, L) bool, True for real positions
        scores = self.score(x)  # (B, L, G)
        scores = scores.masked_fill(~keep.unsqueeze(-1), torch.finfo(scores.dtype).min)  # -1e9 overflows fp16
        weights = torch.softmax(scores, dim=1)  # (B, L, G)
        pooled = torch.einsum("blg,blh->bgh", weights, x).flatten(1)  # (B, G*H)
        return self.merge(pooled)  # (B, out_size)
