"""Incremental decoding for the unified stack: each image's regions once, then one word per step.

Under the sequence-to-sequence mask a region reads only regions, so every layer's region states,
and the keys and values each attention sublayer makes of them, are the same at every decoding
step. A word reads the regions and the words up to itself, so the states of words already decoded
do not change either. A step therefore runs only its new word through the stack, attending to kept
keys and values (a key-value cache), instead of the whole [regions; prefix] sequence again.

``CachedStep`` keeps the ``nas.decoding`` step contract, ``step(prefix, rows)``: it recognises
each prefix as the extension of one it ran on its previous call (same image, same tokens but the
last) and continues that hypothesis' cache, so beam search may reorder, copy and drop hypotheses
freely. A prefix it does not recognise is run from its first token, so any call sequence gets the
same log-probs as running the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from search_spaces.unified.backbone import UnifiedStack
from search_spaces.unified.masks import seq2seq_mask
from search_spaces.unified.ops import FeedForward, Identity, JointRelationAttention, JointSelfAttention

__all__ = ["CachedStep", "RegionMemory", "supports_cache"]

_CACHEABLE_ATTENTION = (JointSelfAttention, JointRelationAttention, Identity)
_CACHEABLE_FFN = (FeedForward, Identity)
KeysValues = tuple[torch.Tensor, torch.Tensor]  # (R, h, L, d) each


def supports_cache(backbone: UnifiedStack) -> bool:
    """Whether every sublayer is a fixed op this module knows (a supernet's mixed ops are not)."""
    return (all(isinstance(op, _CACHEABLE_ATTENTION) for op in backbone.attention)
            and all(isinstance(op, _CACHEABLE_FFN) for op in backbone.ffn))


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # keep: (R, L) bool -> (R, 1, 1, L): 0 where a key may be read, a huge negative elsewhere
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(
        ~keep, torch.finfo(dtype).min)[:, None, None, :]


@dataclass
class RegionMemory:
    """Per layer, the keys and values of an image's region states (None for a skipped attention),
    and the additive mask of the real regions."""

    keys_values: list[KeysValues | None]  # (B, h, N, d) each
    keep_mask: torch.Tensor  # (B, 1, 1, N)

    @classmethod
    def build(cls, backbone: UnifiedStack, image: torch.Tensor, image_keep: torch.Tensor,
              relation: torch.Tensor | None) -> "RegionMemory":
        # image: (B, N, H); image_keep: (B, N); relation: (B, N, N, R) or None
        x = image + backbone.segments.weight[0]  # (B, N, H)
        no_text = image_keep.new_zeros((image_keep.shape[0], 0))
        mask = seq2seq_mask(image_keep, no_text, x.dtype)  # (B, 1, N, N): regions read real regions
        keys_values: list[KeysValues | None] = []
        for attention, ffn in zip(backbone.attention, backbone.ffn):
            keys_values.append(None if isinstance(attention, Identity) else attention.attention.keys_values(x))
            x = ffn(attention(x, mask, relation), mask, relation)
        return cls(keys_values, _additive(image_keep, x.dtype))


def extend_text(backbone: UnifiedStack, text: torch.Tensor, text_keep: torch.Tensor, regions: RegionMemory,
                rows: torch.Tensor, past: list[KeysValues | None] | None,
                past_keep: torch.Tensor) -> tuple[torch.Tensor, list[KeysValues | None]]:
    """Run new text positions through the stack after ``past`` ones, under the seq2seq mask.

    Returns the new positions' top states and every layer's keys and values of past plus new text.
    """
    # text: (R, m, H) embedded; text_keep: (R, m); rows: (R,) image of each; past: per layer (R, h, p, d) or
    # None for no past; past_keep: (R, p) -> states (R, m, H), keys/values (R, h, p + m, d) per layer
    new = text.shape[1]
    causal = torch.ones(new, new, dtype=torch.bool, device=text.device).tril()  # (m, m): a word reads itself and before
    new_mask = torch.zeros(causal.shape, dtype=text.dtype, device=text.device).masked_fill(
        ~causal, torch.finfo(text.dtype).min)[None, None] + _additive(text_keep, text.dtype)  # (R, 1, m, m)
    mask = torch.cat([regions.keep_mask[rows].expand(-1, -1, new, -1),
                      _additive(past_keep, text.dtype).expand(-1, -1, new, -1), new_mask], dim=3)  # (R, 1, m, N+p+m)
    x = text + backbone.segments.weight[1]  # (R, m, H)
    kept: list[KeysValues | None] = []
    for layer, (attention, ffn) in enumerate(zip(backbone.attention, backbone.ffn)):
        region_kv = regions.keys_values[layer]
        if region_kv is None:
            kept.append(None)
        else:
            new_keys, new_values = attention.attention.keys_values(x)  # (R, h, m, d)
            text_keys, text_values = (new_keys, new_values) if past is None else (
                torch.cat([past[layer][0], new_keys], dim=2), torch.cat([past[layer][1], new_values], dim=2))
            kept.append((text_keys, text_values))
            keys = torch.cat([region_kv[0][rows], text_keys], dim=2)  # (R, h, N+p+m, d)
            values = torch.cat([region_kv[1][rows], text_values], dim=2)
            # Text queries get no geometry bias (it is between regions only), so both ops attend alike.
            x = attention.residual(x, attention.attention.attend(x, keys, values, mask))
        x = ffn(x)
    return x, kept


class CachedStep:
    """A ``nas.decoding`` step function over one batch of images that reuses its previous call.

    Args:
        embed_text: ``(tokens, first_position) -> (text, text_keep)``, the model's text embedding.
        backbone: the stack; ``supports_cache(backbone)`` must hold.
        word_log_probs: top states (R, H) -> next-word log-probs (R, V).
        image, image_keep, relation: the embedded images, as the stack reads them.
    """

    def __init__(self, embed_text: Callable[..., tuple[torch.Tensor, torch.Tensor]], backbone: UnifiedStack,
                 word_log_probs: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                 image_keep: torch.Tensor, relation: torch.Tensor | None) -> None:
        if not supports_cache(backbone):
            raise ValueError("CachedStep needs a stack of fixed ops (see supports_cache)")
        self.embed_text, self.backbone, self.word_log_probs = embed_text, backbone, word_log_probs
        self.regions = RegionMemory.build(backbone, image, image_keep, relation)
        self._prefix: torch.Tensor | None = None  # (R', t-1) the previous call's prefixes
        self._rows: torch.Tensor | None = None  # (R',)
        self._past: list[KeysValues | None] = []
        self._past_keep: torch.Tensor | None = None  # (R', t-1)

    def _parents(self, prefix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """Each prefix's row in the previous call when every one extends a previous prefix, else None."""
        if self._prefix is None or self._prefix.shape[1] != prefix.shape[1] - 1:
            return None
        assert self._rows is not None
        before = torch.cat([self._rows[:, None], self._prefix], dim=1)  # (R', t)
        wanted = torch.cat([rows[:, None], prefix[:, :-1]], dim=1)  # (R, t)
        same = (wanted[:, None, :] == before[None, :, :]).all(dim=2)  # (R, R')
        if not bool(same.any(dim=1).all()):
            return None
        return same.int().argmax(dim=1)  # (R,) the first match; equal prefixes have equal caches

    def __call__(self, prefix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # prefix: (R, t) starting with BOS; rows: (R,) -> (R, V)
        parents = self._parents(prefix, rows)
        if parents is None:
            start, past, past_keep = 0, None, prefix.new_zeros((prefix.shape[0], 0), dtype=torch.bool)
        else:
            assert self._past_keep is not None
            start = prefix.shape[1] - 1
            unchanged = parents.shape[0] == self._past_keep.shape[0] and bool(
                (parents == torch.arange(parents.shape[0], device=parents.device)).all())
            past = self._past if unchanged else [None if kv is None else (kv[0][parents], kv[1][parents])
                                                 for kv in self._past]
            past_keep = self._past_keep if unchanged else self._past_keep[parents]
        text, text_keep = self.embed_text(prefix[:, start:], start)  # (R, m, H)
        states, self._past = extend_text(self.backbone, text, text_keep, self.regions, rows, past, past_keep)
        self._prefix, self._rows = prefix, rows
        self._past_keep = torch.cat([past_keep, text_keep], dim=1)
        return self.word_log_probs(states[:, -1])

