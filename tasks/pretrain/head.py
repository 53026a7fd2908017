"""LXMERT's pre-training heads on any backbone's outputs.

Per text position a masked-word classifier; per region the masked-object class, attribute and
feature (LXMERT's ``obj``, ``attr`` and ``feat`` visual losses); from the pooled pair one
matching logit and the answer logits (MmNas's AttFlat fusion, with its element-wise product term,
stands in for LXMERT's pooled CLS vector). None of it is kept when a fine-tuning run starts from
the pre-trained weights.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.heads import FusionHead
from nas.layers import McanLayerNorm

__all__ = ["PretrainHead"]


def _transform(hidden: int) -> nn.Sequential:
    # BERT's prediction-head transform: dense, GELU, LayerNorm before the output layer.
    return nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), McanLayerNorm(hidden))


class PretrainHead(nn.Module):
    """Args:
        hidden: backbone width H.
        vocab_size: token ids predicted for masked words.
        num_objects, num_attrs: detector object and attribute classes.
        feature_dim: region feature size D (regressed for masked regions).
        num_answers: QA outputs (0: no QA).
        flat_mlp, dropout: the pooled fusion's AttFlat settings.
    """

    def __init__(self, hidden: int, vocab_size: int, num_objects: int, num_attrs: int, feature_dim: int,
                 num_answers: int, flat_mlp: int, dropout: float) -> None:
        super().__init__()
        self.words = nn.Sequential(_transform(hidden), nn.Linear(hidden, vocab_size))
        self.regions = _transform(hidden)
        self.objects = nn.Linear(hidden, num_objects)
        self.attrs = nn.Linear(hidden, num_attrs)
        self.features = nn.Linear(hidden, feature_dim)
        # [matching, answers...]; the product term compares text and image directly, as the itm task's does
        self.pooled = FusionHead(hidden, flat_mlp, 1 + num_answers, dropout=dropout, fusion="product")

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        # text: (B, T, H); image: (B, N, H)
        regions = self.regions(image)  # (B, N, H)
        pooled = self.pooled(text, text_keep, image, image_keep)  # (B, 1 + A)
        return {"words": self.words(text),  # (B, T, V)
                "objects": self.objects(regions),  # (B, N, O)
                "attrs": self.attrs(regions),  # (B, N, A_attr)
                "features": self.features(regions),  # (B, N, D)
                "match": pooled[:, 0],  # (B,)
                "answers": pooled[:, 1:]}  # (B, A)
