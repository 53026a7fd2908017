"""The two self-attention masks of VLP's unified encoder-decoder.

Zhou et al., "Unified Vision-Language Pre-Training for Image Captioning and VQA", AAAI 2020
(https://arxiv.org/abs/1909.11059). The sequence is [regions; text]:

- **bidirectional** (understanding: VQA, masked language modelling): every position reads every
  real (non-padding) position;
- **sequence-to-sequence** (generation: captioning): regions read only regions; a text position
  reads every region and the text positions up to and including itself, so the prediction at
  text position t cannot see the words after t.
"""

from __future__ import annotations

import torch

__all__ = ["bidirectional_mask", "seq2seq_mask", "MASKS"]


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # allowed: (B, S, S) bool -> (B, 1, S, S) float: 0 where a query may read a key, a huge negative elsewhere.
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def bidirectional_mask(region_keep: torch.Tensor, text_keep: torch.Tensor,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # region_keep: (B, N) bool; text_keep: (B, T) bool -> (B, 1, N+T, N+T)
    keep = torch.cat([region_keep, text_keep], dim=1)  # (B, S)
    allowed = keep[:, None, :].expand(-1, keep.shape[1], -1)  # (B, S, S): query i reads key j
    return _additive(allowed, dtype)


def seq2seq_mask(region_keep: torch.Tensor, text_keep: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # region_keep: (B, N) bool; text_keep: (B, T) bool -> (B, 1, N+T, N+T)
    regions, words = region_keep.shape[1], text_keep.shape[1]
    keep = torch.cat([region_keep, text_keep], dim=1)  # (B, S)
    is_text = torch.arange(regions + words, device=keep.device) >= regions  # (S,)
    order = torch.arange(regions + words, device=keep.device)
    # A region key is readable by everyone; a text key only by text queries at or after it.
    readable = ~is_text[None, :] | (is_text[:, None] & (order[None, :] <= order[:, None]))  # (S, S)
    allowed = readable[None] & keep[:, None, :]  # (B, S, S)
    return _additive(allowed, dtype)


MASKS = {"bidirectional": bidirectional_mask, "seq2seq": seq2seq_mask}
