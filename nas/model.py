"""The network every task trains: input embedding -> searched backbone -> task head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VisionLanguageModel"]


class VisionLanguageModel(nn.Module):
    """Glue that passes a batch dict through embedding, backbone and head.

    Batches carry ``tokens`` (B, T), ``features`` (B, N, D), ``boxes`` (B, N, 4),
    ``num_regions`` (B,) and ``image_size`` (B, 2) as (height, width).
    """

    def __init__(self, embedding: nn.Module, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.backbone = backbone
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text, text_keep, image, image_keep = self.embedding(
            batch["tokens"], batch["features"], batch["boxes"], batch["num_regions"], batch["image_size"])
        text, image = self.backbone(text, text_keep, image, image_keep, batch["boxes"])
        return self.head(text, text_keep, image, image_keep)
