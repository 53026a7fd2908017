"""The network every task trains: input embedding -> searched backbone -> task head."""

from __future__ import annotations

import torch
from torch import nn

from nas.text_cache import TextCache

__all__ = ["VisionLanguageModel", "TwoStreamEmbedding"]


class TwoStreamEmbedding(nn.Module):
    """Base of a space's input embedding: text and image are embedded apart (``embed_text`` and
    ``embed_image``), which the text cache relies on to encode each caption once."""

    def forward(self, tokens: torch.Tensor, features: torch.Tensor, boxes: torch.Tensor,
                num_regions: torch.Tensor, image_size: torch.Tensor):
        # tokens: (B, T) int; features: (B, N, D); boxes: (B, N, 4); num_regions: (B,); image_size: (B, 2)
        text, text_keep = self.embed_text(tokens)  # (B, T, H), (B, T)
        image, image_keep = self.embed_image(features, boxes, num_regions, image_size)  # (B, N, H), (B, N)
        return text, text_keep, image, image_keep

    def embed_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def embed_image(self, features: torch.Tensor, boxes: torch.Tensor, num_regions: torch.Tensor,
                    image_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


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
        self.text_cache: TextCache | None = None  # set by nas.text_cache.caching_text

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.text_cache is not None and "text_index" in batch and not self.training \
                and hasattr(self.backbone, "encode_text"):
            return self._forward_with_cached_text(batch)
        text, text_keep, image, image_keep = self.embedding(
            batch["tokens"], batch["features"], batch["boxes"], batch["num_regions"], batch["image_size"])
        text, image = self.backbone(text, text_keep, image, image_keep, batch["boxes"])
        return self.head(text, text_keep, image, image_keep)

    def _forward_with_cached_text(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        def encode(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            text, text_keep = self.embedding.embed_text(tokens)  # (S, T, H), (S, T)
            return self.backbone.encode_text(text, text_keep), text_keep

        text, text_keep = self.text_cache.lookup(batch["text_index"], batch["tokens"], encode)  # (B, T, H)
        image, image_keep = self.embedding.embed_image(batch["features"], batch["boxes"], batch["num_regions"],
                                                       batch["image_size"])
        image = self.backbone.decode_image(image, image_keep, text, text_keep, batch["boxes"])
        return self.head(text, text_keep, image, image_keep)
