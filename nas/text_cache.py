"""Encode each text once when an evaluation pairs it with many images.

All-pairs matching scores every caption against every image; when the backbone's text
stream never sees the image (MmNas's encoder), a caption's encoding is the same in every
pair. Batches that carry ``text_index`` (equal index, equal tokens) let the model encode
each text once per evaluation and gather it for later pairs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

__all__ = ["TextCache", "caching_text"]

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TextCache:
    """Encoded text rows (and their keep masks) stored by ``text_index``."""

    def __init__(self) -> None:
        self.length = -1  # padded token length the rows were encoded at
        self.filled = torch.zeros(0, dtype=torch.bool)  # (S,)
        self.rows: torch.Tensor | None = None  # (S, T, H)
        self.keep: torch.Tensor | None = None  # (S, T) bool

    def lookup(self, index: torch.Tensor, tokens: torch.Tensor, encode: Encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded rows for ``tokens`` (B, T) with ids ``index`` (B,), encoding only ids not seen before."""
        if tokens.shape[1] != self.length:  # batches padded differently: start over
            self.length, self.rows, self.keep = tokens.shape[1], None, None
            self.filled = torch.zeros(0, dtype=torch.bool, device=index.device)
        self._reserve(int(index.max()) + 1)
        missing = ~self.filled[index]
        if missing.any():
            new, first = _first_occurrences(index[missing])
            rows, keep = encode(tokens[missing][first])
            if self.rows is None:
                self.rows = rows.new_empty((self.filled.shape[0], *rows.shape[1:]))
                self.keep = keep.new_empty((self.filled.shape[0], *keep.shape[1:]))
            self.rows[new], self.keep[new] = rows, keep
            self.filled[new] = True
        return self.rows[index], self.keep[index]

    def _reserve(self, size: int) -> None:
        extra = size - self.filled.shape[0]
        if extra <= 0:
            return
        self.filled = torch.cat([self.filled, self.filled.new_zeros(extra)])
        if self.rows is not None:
            self.rows = torch.cat([self.rows, self.rows.new_empty((extra, *self.rows.shape[1:]))])
            self.keep = torch.cat([self.keep, self.keep.new_empty((extra, *self.keep.shape[1:]))])


def _first_occurrences(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values of ``index`` and the position of each one's first occurrence."""
    values, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(index.shape[0], device=index.device)
    first = torch.full_like(values, index.shape[0]).scatter_reduce_(0, inverse, positions, "amin")
    return values, first


@contextmanager
def caching_text(model: nn.Module) -> Iterator[None]:
    """Within the block, a model that supports it reuses text encodings by ``text_index``.

    Only for evaluation: the cache holds encodings made with the current weights.
    """
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if not hasattr(inner, "text_cache"):
        yield
        return
    inner.text_cache = TextCache()
    try:
        yield
    finally:
        inner.text_cache = None
