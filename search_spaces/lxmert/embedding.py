"""LXMERT's input embeddings: BERT-style text and box-aware object features.

Text: word + position embeddings, LayerNorm, dropout (LXMERT's ``BertEmbeddings``; its token-type
embedding is left out, since every token has type 0 there). Objects: LXMERT's ``VisualFeatEncoder``,
``(LN(W_f f) + LN(W_b b)) / 2`` then dropout, where ``b`` is the box divided by the image width and
height.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.dropout import Dropout
from nas.errors import UserError
from nas.model import TwoStreamEmbedding
from search_spaces.lxmert.ops import LAYER_NORM_EPS

__all__ = ["LxmertEmbedding"]


class LxmertEmbedding(TwoStreamEmbedding):
    """Args:
        vocab_size: number of token ids (0 is padding).
        hidden: model width H.
        feature_dim: region feature size D (2048 in LXMERT).
        dropout: dropout after each embedding.
        max_positions: longest token sequence (512 in BERT).
        word_vectors: optional (vocab_size, E) initial word vectors, fine-tuned and projected to H.
    """

    def __init__(self, vocab_size: int, hidden: int, feature_dim: int, dropout: float, max_positions: int,
                 word_vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        if word_vectors is not None:
            self.words = nn.Embedding.from_pretrained(word_vectors.float(), freeze=False, padding_idx=0)
            self.word_proj = nn.Linear(self.words.embedding_dim, hidden)
        else:
            self.words = nn.Embedding(vocab_size, hidden, padding_idx=0)
            self.word_proj = None
        self.positions = nn.Embedding(max_positions, hidden)
        self.text_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.regions = nn.Linear(feature_dim, hidden)
        self.region_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.boxes = nn.Linear(4, hidden)
        self.box_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.drop = Dropout(dropout)

    def embed_text(self, tokens: torch.Tensor, first_position: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``first_position`` > 0 embeds the continuation of a sequence (a decoder's next words)."""
        # tokens: (B, T) int -> text (B, T, H), text_keep (B, T) bool
        end = first_position + tokens.shape[1]
        if end > self.positions.num_embeddings:
            # The task's max_tokens and the space's positions are set in different sections.
            raise UserError(f"space.max_positions={self.positions.num_embeddings}: a batch has {end} "
                            "tokens; raise space.max_positions or lower task.max_tokens")
        words = self.words(tokens)
        if self.word_proj is not None:
            words = self.word_proj(words)
        positions = self.positions(torch.arange(first_position, end, device=tokens.device))  # (T, H)
        return self.drop(self.text_norm(words + positions)), tokens != 0

    def embed_image(self, features: torch.Tensor, boxes: torch.Tensor, num_regions: torch.Tensor,
                    image_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # features: (B, N, D); boxes: (B, N, 4) xyxy pixels; image_size: (B, 2) as (height, width)
        positions = torch.arange(features.shape[1], device=features.device)
        image_keep = positions[None, :] < num_regions[:, None]  # (B, N)
        height, width = image_size[:, 0, None].float(), image_size[:, 1, None].float()  # (B, 1)
        scaled = torch.stack([boxes[..., 0] / width, boxes[..., 1] / height,
                              boxes[..., 2] / width, boxes[..., 3] / height], dim=-1)  # (B, N, 4)
        image = (self.region_norm(self.regions(features)) + self.box_norm(self.boxes(scaled))) / 2  # (B, N, H)
        return self.drop(image), image_keep
