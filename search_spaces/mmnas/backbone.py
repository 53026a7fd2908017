"""MmNas's network body: text encoder blocks, then image-region decoder blocks."""

from __future__ import annotations

import torch
from torch import nn

from nas.layers import McanLayerNorm
from nas.model import TwoStreamEmbedding
from search_spaces.mmnas.geometry import box_geometry
from search_spaces.mmnas.relation import embed_geometry

__all__ = ["TextImageEmbedding", "EncoderDecoder"]


class TextImageEmbedding(TwoStreamEmbedding):
    """Word embedding + 1-layer LSTM for text; a linear projection for region features.

    Args:
        vocab_size: number of token ids (0 is padding).
        word_dim: word-vector size (taken from ``word_vectors`` when given).
        hidden: model width H.
        feature_dim: region feature size D.
        box_features: add a projection of the normalised box ``[x1/w, y1/h, x2/w, y2/h, area]``
            (MmNas's BBOX_FEATURE), which lets attention see where regions are.
        word_vectors: optional (vocab_size, word_dim) initial embedding, fine-tuned.
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, feature_dim: int,
                 box_features: bool, word_vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        if word_vectors is not None:
            self.words = nn.Embedding.from_pretrained(word_vectors.float(), freeze=False, padding_idx=0)
        else:
            self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.lstm = nn.LSTM(self.words.embedding_dim, hidden, batch_first=True)
        self.regions = nn.Linear(feature_dim, hidden)
        self.boxes = nn.Linear(5, hidden) if box_features else None

    def embed_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens: (B, T) int -> text (B, T, H), text_keep (B, T) bool
        text, _ = self.lstm(self.words(tokens))
        return text, tokens != 0

    def embed_image(self, features: torch.Tensor, boxes: torch.Tensor, num_regions: torch.Tensor,
                    image_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # features: (B, N, D); boxes: (B, N, 4) -> image (B, N, H), image_keep (B, N) bool
        positions = torch.arange(features.shape[1], device=features.device)
        image_keep = positions[None, :] < num_regions[:, None]  # (B, N)
        image = self.regions(features)  # (B, N, H)
        if self.boxes is not None:
            height, width = image_size[:, 0, None].float(), image_size[:, 1, None].float()  # (B, 1)
            scaled = torch.stack([boxes[..., 0] / width, boxes[..., 1] / height,
                                  boxes[..., 2] / width, boxes[..., 3] / height], dim=-1)  # (B, N, 4)
            area = ((scaled[..., 2] - scaled[..., 0]) * (scaled[..., 3] - scaled[..., 1])).unsqueeze(-1)
            image = image + self.boxes(torch.cat([scaled, area], dim=-1))
        return image, image_keep


class EncoderDecoder(nn.Module):
    """Runs every encoder block on the text, then every decoder block on the regions.

    Args:
        encoder: blocks applied to the text stream.
        decoder: blocks applied to the region stream, with the encoded text as context.
        relation_dim: size of the shared geometry embedding used by relation ops.
        final_norm_width: with pre-LN blocks, the width H of a LayerNorm closing each stream (their
            residual sums are never normalised otherwise); 0 for MmNas's post-LN blocks.
    """

    def __init__(self, encoder: list[nn.Module], decoder: list[nn.Module], relation_dim: int,
                 final_norm_width: int = 0) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(decoder)
        self.text_norm = McanLayerNorm(final_norm_width) if final_norm_width else nn.Identity()
        self.image_norm = McanLayerNorm(final_norm_width) if final_norm_width else nn.Identity()
        uses_relation = any(getattr(block, "needs_relation", False) for block in decoder)
        # One geometry embedding shared by all relation blocks, as in MmNas (linear_y_rel).
        # Kept as Linear + ReLU for the parameter names; embed_geometry runs both with a faster backward.
        self.relation = nn.Sequential(nn.Linear(4, relation_dim), nn.ReLU()) if uses_relation else None

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor, boxes: torch.Tensor):
        # text: (B, T, H); image: (B, N, H); boxes: (B, N, 4)
        text = self.encode_text(text, text_keep)
        return text, self.decode_image(image, image_keep, text, text_keep, boxes)

    def encode_text(self, text: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        """The encoder blocks; they never see the image, so the result can be reused across images."""
        # text: (B, T, H) -> (B, T, H)
        for block in self.encoder:
            text = block(text, text_keep)
        return self.text_norm(text)

    def decode_image(self, image: torch.Tensor, image_keep: torch.Tensor, text: torch.Tensor,
                     text_keep: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # image: (B, N, H); text: (B, T, H) encoded; boxes: (B, N, 4) -> (B, N, H)
        relation = embed_geometry(box_geometry(boxes), self.relation[0]) if self.relation is not None else None
        # relation: (B, N, N, R)
        for block in self.decoder:
            image = block(image, image_keep, text, text_keep, relation)
        return self.image_norm(image)
