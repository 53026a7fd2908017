"""MmNas's matching head: the pooled-fusion head with one cross-encoder score per pair."""

from __future__ import annotations

import torch

from nas.heads import FusionHead

__all__ = ["MatchingHead"]


class MatchingHead(FusionHead):
    """``Linear(LN(AttFlat(text) + AttFlat(image)))`` -> one logit per image-caption pair."""

    def __init__(self, hidden: int, flat_mlp: int, dropout: float = 0.1, fusion: str = "sum") -> None:
        super().__init__(hidden, flat_mlp, num_outputs=1, dropout=dropout, fusion=fusion)

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        return super().forward(text, text_keep, image, image_keep).squeeze(-1)  # (B,)
