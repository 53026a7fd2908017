"""SimREC's one-stage pipeline after the inputs: language -> pooled text -> fusion -> attention -> refine."""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import AttentionFlatten

__all__ = ["SimrecBackbone"]


class SimrecBackbone(nn.Module):
    """Args:
        language: the language op, ``(words, text_keep) -> (B, T, H)``.
        fusion, attention, refine: cell ops, ``(image, image_keep, text, text_keep, pooled, boxes) -> (B, N, H)``.
        hidden: model width H.
        flat_mlp: hidden size of the AttFlat that pools the expression (SimREC's ``flat_lang_feat``).
        dropout: dropout in that pooling.

    Returns (text, image) like the other spaces' backbones, so the tasks' heads run unchanged.
    """

    def __init__(self, language: nn.Module, fusion: nn.Module, attention: nn.Module, refine: nn.Module,
                 hidden: int, flat_mlp: int, dropout: float) -> None:
        super().__init__()
        self.language = language
        self.pool = AttentionFlatten(hidden, flat_mlp, hidden, 1, dropout)
        self.fusion = fusion
        self.attention = attention
        self.refine = refine

    def forward(self, words: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # words: (B, T, E); image: (B, N, H); boxes: (B, N, 4)
        text = self.encode_text(words, text_keep)  # (B, T, H)
        return text, self.decode_image(image, image_keep, text, text_keep, boxes)

    def encode_text(self, words: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        """The language op alone; it never sees the image, so the text cache may reuse it."""
        # words: (B, T, E) -> (B, T, H)
        return self.language(words, text_keep)

    def decode_image(self, image: torch.Tensor, image_keep: torch.Tensor, text: torch.Tensor,
                     text_keep: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # image: (B, N, H); text: (B, T, H) encoded -> (B, N, H)
        pooled = self.pool(text, text_keep)  # (B, H)
        image = self.fusion(image, image_keep, text, text_keep, pooled, boxes)
        image = self.attention(image, image_keep, text, text_keep, pooled, boxes)
        return self.refine(image, image_keep, text, text_keep, pooled, boxes)
