"""One stack of searched layers over the joint [regions; text] sequence."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.mmnas.geometry import box_geometry
from search_spaces.mmnas.relation import embed_geometry
from search_spaces.unified.masks import bidirectional_mask

__all__ = ["UnifiedStack", "SLOTS"]

SLOTS = ("attention", "ffn")  # the labelled sublayers of one layer, in order


class UnifiedStack(nn.Module):
    """Args:
        layers: per layer, the module at each of ``SLOTS`` (a chosen op, or a strategy's mixed op).
        hidden: width H.
        relation_dim: size of the box-geometry embedding that relation attention reads.

    Called as a backbone of ``VisionLanguageModel`` (``forward``: bidirectional, for tasks that
    classify) or through ``run`` with any mask (the captioner's sequence-to-sequence passes).
    """

    def __init__(self, layers: list[dict[str, nn.Module]], hidden: int, relation_dim: int) -> None:
        super().__init__()
        self.attention = nn.ModuleList(layer["attention"] for layer in layers)
        self.ffn = nn.ModuleList(layer["ffn"] for layer in layers)
        # Which stream a position belongs to; VLP's segment embedding plays this part.
        self.segments = nn.Embedding(2, hidden)
        uses_relation = any(getattr(block, "needs_relation", False) for block in self.attention)
        # One geometry embedding shared by every relation block, as MmNas's linear_y_rel.
        self.geometry = nn.Linear(4, relation_dim) if uses_relation else None

    def relation(self, boxes: torch.Tensor) -> torch.Tensor | None:
        # boxes: (B, N, 4) -> (B, N, N, R), or None when no block reads geometry
        return embed_geometry(box_geometry(boxes), self.geometry) if self.geometry is not None else None

    def run(self, image: torch.Tensor, text: torch.Tensor, attention_mask: torch.Tensor,
            relation: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # image: (B, N, H); text: (B, T, H); attention_mask: (B, 1, N+T, N+T) -> text (B, T, H), image (B, N, H)
        regions = image.shape[1]
        x = torch.cat([image + self.segments.weight[0], text + self.segments.weight[1]], dim=1)  # (B, S, H)
        for attention, ffn in zip(self.attention, self.ffn):
            x = ffn(attention(x, attention_mask, relation), attention_mask, relation)
        return x[:, regions:], x[:, :regions]

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor, image_keep: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # text: (B, T, H); image: (B, N, H); boxes: (B, N, 4) -> text (B, T, H), image (B, N, H)
        mask = bidirectional_mask(image_keep, text_keep, text.dtype)  # (B, 1, S, S)
        return self.run(image, text, mask, self.relation(boxes))
