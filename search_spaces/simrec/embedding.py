"""SimREC's inputs: word embeddings for the language op, projected cells for the rest.

SimREC reads 300-d GloVe vectors (``word_embed_size=300``) into its language encoder, which maps
them to the model width; here the embedding stops at the word vectors (B, T, E), so both language
ops read the same tensor. Cells (or regions) are projected to H, plus a projection of the
normalised box ``[x1/w, y1/h, x2/w, y2/h, area]``: SimREC's convolutions see where a position is,
a sequence of cells does not.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.dropout import Dropout
from nas.model import TwoStreamEmbedding

__all__ = ["SimrecEmbedding"]


class SimrecEmbedding(TwoStreamEmbedding):
    """Args:
        vocab_size: number of token ids (0 is padding).
        word_dim: word-vector size E (taken from ``word_vectors`` when given).
        hidden: model width H.
        feature_dim: cell or region feature size D.
        box_features: add the projected normalised box to each position.
        dropout: dropout on the projected positions.
        word_vectors: optional (vocab_size, E) initial word vectors, fine-tuned.
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, feature_dim: int, box_features: bool,
                 dropout: float, word_vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        if word_vectors is not None:
            self.words = nn.Embedding.from_pretrained(word_vectors.float(), freeze=False, padding_idx=0)
        else:
            self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.cells = nn.Linear(feature_dim, hidden)
        self.boxes = nn.Linear(5, hidden) if box_features else None
        self.norm = nn.LayerNorm(hidden)
        self.drop = Dropout(dropout)

    @property
    def word_dim(self) -> int:
        return self.words.embedding_dim

    def embed_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens: (B, T) int -> words (B, T, E), text_keep (B, T) bool
        return self.words(tokens), tokens != 0

    def embed_image(self, features: torch.Tensor, boxes: torch.Tensor, num_regions: torch.Tensor,
                    image_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # features: (B, N, D); boxes: (B, N, 4) xyxy pixels; image_size: (B, 2) as (height, width)
        positions = torch.arange(features.shape[1], device=features.device)
        image_keep = positions[None, :] < num_regions[:, None]  # (B, N)
        image = self.cells(features)  # (B, N, H)
        if self.boxes is not None:
            height, width = image_size[:, 0, None].float(), image_size[:, 1, None].float()  # (B, 1)
            scaled = torch.stack([boxes[..., 0] / width, boxes[..., 1] / height,
                                  boxes[..., 2] / width, boxes[..., 3] / height], dim=-1)  # (B, N, 4)
            area = ((scaled[..., 2] - scaled[..., 0]) * (scaled[..., 3] - scaled[..., 1])).unsqueeze(-1)
            image = image + self.boxes(torch.cat([scaled, area], dim=-1))
        return self.drop(self.norm(image)), image_keep
