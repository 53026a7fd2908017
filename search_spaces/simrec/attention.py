"""Candidate attention steps after fusion (label ``attention``), and the refinement ops.

``garan`` follows SimREC's ``GaranAttention`` (collect-and-diffuse, GARAN V2's word weighting):
each of ``garan_heads`` word groups weights the expression's words into one guided text vector;
its head *collects* the cells into one vector by a softmax over cells, then *diffuses* it back,
each cell receiving it scaled by a sigmoid of its match with the guided text; the merged heads
are normalised and added to the cells, then LeakyReLU(0.1). ``cross`` is plain cross-attention of
the cells to the words (MmNas's guided attention sublayer).

Every op is called as ``op(image, image_keep, text, text_keep, pooled, boxes)`` and returns the
image's shape (B, N, H).
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.mmnas.ops import FeedForward, GuidedAttention
from search_spaces.simrec.sizes import SimrecSizes

__all__ = ["GaranAttention", "CrossAttention", "Refine", "Identity"]


def _masked(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # scores: (B, K, L); keep: (B, L) bool -> padding at the dtype's minimum (fp16-safe)
    return scores.masked_fill(~keep[:, None, :], torch.finfo(scores.dtype).min)


class GaranAttention(nn.Module):
    """Text-guided collect-and-diffuse attention over the cells."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        if sizes.hidden % sizes.garan_heads:
            raise ValueError(f"hidden size {sizes.hidden} is not a multiple of garan_heads {sizes.garan_heads}")
        self.heads = sizes.garan_heads
        self.head_dim = sizes.hidden // sizes.garan_heads
        self.word_groups = nn.Linear(sizes.hidden, self.heads)
        self.query = nn.Linear(sizes.hidden, sizes.hidden)
        self.collect_key = nn.Linear(sizes.hidden, sizes.hidden)
        self.diffuse_key = nn.Linear(sizes.hidden, sizes.hidden)
        self.value = nn.Linear(sizes.hidden, sizes.hidden)
        self.merge = nn.Linear(sizes.hidden, sizes.hidden)
        self.drop = nn.Dropout(sizes.dropout)
        self.norm = nn.LayerNorm(sizes.hidden)
        self.act = nn.LeakyReLU(0.1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, K, L, d)

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        # image: (B, N, H); image_keep: (B, N); text: (B, T, H); text_keep: (B, T) -> (B, N, H)
        groups = torch.softmax(_masked(self.word_groups(text).transpose(1, 2), text_keep), dim=-1)  # (B, K, T)
        queries = self._split(self.query(text))  # (B, K, T, d)
        guided = torch.einsum("bkt,bktd->bkd", groups, queries)  # (B, K, d): one guided text vector per group
        scale = self.head_dim ** -0.5
        keys, values = self._split(self.collect_key(image)), self._split(self.value(image))  # (B, K, N, d)
        collect = torch.einsum("bkd,bknd->bkn", guided, keys) * scale  # (B, K, N)
        collect = self.drop(torch.softmax(_masked(collect, image_keep), dim=-1))
        gathered = torch.einsum("bkn,bknd->bkd", collect, values)  # (B, K, d)
        diffuse = torch.sigmoid(torch.einsum("bknd,bkd->bkn", self._split(self.diffuse_key(image)), guided) * scale)
        spread = self.drop(diffuse).unsqueeze(-1) * gathered.unsqueeze(2)  # (B, K, N, d)
        batch, _, count, _ = spread.shape
        update = self.merge(spread.transpose(1, 2).reshape(batch, count, -1))  # (B, N, H)
        return self.act(self.norm(update) + image)


class CrossAttention(nn.Module):
    """The cells attend to the words: ``LN(x + Dropout(MHA(x, text)))``."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        self.attention = GuidedAttention(sizes.sublayer())

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        # image: (B, N, H); text: (B, T, H) -> (B, N, H)
        return self.attention(image, image_keep, text, text_keep)


class Refine(nn.Module):
    """A feed-forward sublayer on every cell (label ``refine``)."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        self.ffn = FeedForward(sizes.sublayer())

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        # image: (B, N, H) -> (B, N, H)
        return self.ffn(image, image_keep)


class Identity(nn.Module):
    """The skipped refinement."""

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        return image
