"""MmNas/MCAN's pooled-fusion head: AttFlat(text) + AttFlat(image) -> LayerNorm -> Linear.

VQA uses it with one output per answer, image-text matching with one score per pair.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import AttentionFlatten, McanLayerNorm

__all__ = ["FusionHead"]


class FusionHead(nn.Module):
    """Args:
        hidden: backbone width H.
        flat_mlp: hidden size of the AttFlat scoring MLP (512 in MmNas).
        num_outputs: outputs per sample (answers for VQA; 1 for a matching score).
        glimpses: AttFlat glimpses (1 in MmNas).
        dropout: dropout in the AttFlat MLPs.
        fusion: "sum" (MmNas/MCAN: the pooled vectors are added) or "product" (their element-wise
            product is added too, a direct matching term that a cross-encoder otherwise has to
            discover through attention).
    """

    def __init__(self, hidden: int, flat_mlp: int, num_outputs: int, glimpses: int = 1,
                 dropout: float = 0.1, fusion: str = "sum") -> None:
        super().__init__()
        if fusion not in ("sum", "product"):
            raise ValueError(f"fusion must be 'sum' or 'product', got {fusion!r}")
        self.fusion = fusion
        out = 2 * hidden
        self.text_pool = AttentionFlatten(hidden, flat_mlp, out, glimpses, dropout)
        self.image_pool = AttentionFlatten(hidden, flat_mlp, out, glimpses, dropout)
        self.norm = McanLayerNorm(out)
        self.classifier = self.make_classifier(out, num_outputs)

    def make_classifier(self, pooled: int, num_outputs: int) -> nn.Module:
        return nn.Linear(pooled, num_outputs)

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> torch.Tensor:
        # text: (B, T, H); image: (B, N, H) -> logits (B, num_outputs)
        return self.classifier(self.pool(text, text_keep, image, image_keep))

    def pool(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
             image_keep: torch.Tensor) -> torch.Tensor:
        """The fused, normalised vector the classifier reads: (B, T, H), (B, N, H) -> (B, 2H)."""
        pooled_text, pooled_image = self.text_pool(text, text_keep), self.image_pool(image, image_keep)  # (B, 2H)
        fused = pooled_text + pooled_image
        if self.fusion == "product":
            fused = fused + pooled_text * pooled_image
        return self.norm(fused)
