"""LXMERT's pre-training heads on any backbone's outputs.

Per text position a masked-word classifier; per region the masked-object class, attribute and
feature (LXMERT's ``obj``, ``attr`` and ``feat`` visual losses); from the pooled pair one
matching logit and the answer logits (MmNas's AttFlat fusion stands in for LXMERT's pooled CLS
vector; matching pools on its own, with the element-wise product term). A fine-tuning run keeps the QA pooling layers
(``text_pool``, ``image_pool``, ``norm``) where its head has them in the same shapes, and the
answer rows of ``classifier`` for the answers both vocabularies hold (``nas.pretrained``).
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


class PretrainHead(FusionHead):
    """Args:
        hidden: backbone width H.
        vocab_size: token ids predicted for masked words.
        num_objects, num_attrs: detector object and attribute classes.
        feature_dim: region feature size D (regressed for masked regions).
        num_answers: QA outputs (0: no QA).
        flat_mlp, dropout: the pooled fusion's AttFlat settings.
        qa_fusion: QA's pooled fusion, "sum" (MCAN) or "product" (``FusionHead``).
    """

    def __init__(self, hidden: int, vocab_size: int, num_objects: int, num_attrs: int, feature_dim: int,
                 num_answers: int, flat_mlp: int, dropout: float, qa_fusion: str = "sum") -> None:
        # QA is MCAN's fusion head itself, so its pooling layers have the names and the function of a
        # fine-tuning task's FusionHead, which starts from them (LXMERT fine-tunes its pooler too).
        super().__init__(hidden, flat_mlp, num_answers, dropout=dropout, fusion=qa_fusion)
        # Matching pools separately, with the product term that compares text and image directly (as the
        # itm task's head): with the sum alone it stayed at chance for 10 epochs on the small built-in corpus.
        self.matching = FusionHead(hidden, flat_mlp, 1, dropout=dropout, fusion="product")
        self.words = nn.Sequential(_transform(hidden), nn.Linear(hidden, vocab_size))
        self.regions = _transform(hidden)
        self.objects = nn.Linear(hidden, num_objects)
        self.attrs = nn.Linear(hidden, num_attrs)
        self.features = nn.Linear(hidden, feature_dim)

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor) -> dict[str, torch.Tensor]:
        # text: (B, T, H); image: (B, N, H)
        regions = self.regions(image)  # (B, N, H)
        return {"words": self.words(text),  # (B, T, V)
                "objects": self.objects(regions),  # (B, N, O)
                "attrs": self.attrs(regions),  # (B, N, A_attr)
                "features": self.features(regions),  # (B, N, D)
                "match": self.matching(text, text_keep, image, image_keep)[:, 0],  # (B,)
                "answers": super().forward(text, text_keep, image, image_keep)}  # (B, A)
