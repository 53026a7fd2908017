"""MmNas's candidate ops: residual sublayers (post-LN as MmNas, or pre-LN) with one shared signature.

Every op is called as ``op(x, x_keep, context, context_keep, relation)`` and
returns a tensor shaped like ``x``; ops ignore the arguments they do not need.
The same modules build both the supernet (wrapped by a strategy's mixed op) and
the retrained child network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.dropout import Dropout, ReluDropout, dropout
from nas.layers import McanLayerNorm
from search_spaces.mmnas.relation import relation_log_bias

__all__ = ["OpSizes", "OPS", "ENCODER_OPS", "DECODER_OPS", "SHORT_NAMES", "make_op"]


@dataclass(frozen=True)
class OpSizes:
    """Sizes every op is built from."""

    hidden: int
    head_dim: int
    ffn_mult: int
    dropout: float
    relation_dim: int
    # Pre-LN residuals ``x + Dropout(f(LayerNorm(x)))`` in place of MmNas's post-LN: the stream itself
    # is carried through every block unchanged, so no block can squeeze it out.
    norm_first: bool = False


class MultiHeadAttention(nn.Module):
    """Multi-head attention with bias-free projections, as in MmNas (MCAN uses biases)."""

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__()
        if sizes.hidden % sizes.head_dim:
            raise ValueError(f"hidden size {sizes.hidden} is not a multiple of head_dim {sizes.head_dim}")
        self.heads = sizes.hidden // sizes.head_dim
        self.head_dim = sizes.head_dim
        self.dropout = sizes.dropout
        self.query = nn.Linear(sizes.hidden, sizes.hidden, bias=False)
        self.key = nn.Linear(sizes.hidden, sizes.hidden, bias=False)
        self.value = nn.Linear(sizes.hidden, sizes.hidden, bias=False)
        self.merge = nn.Linear(sizes.hidden, sizes.hidden, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory's per-head keys and values, which a decoder may compute once and keep."""
        # memory: (B, Lk, H) -> keys, values (B, h, Lk, d)
        return self._split(self.key(memory)), self._split(self.value(memory))

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """Attention of ``query`` over already projected keys and values under an additive mask."""
        # query: (B, Lq, H); keys, values: (B, h, Lk, d); mask: (B, 1 or h, 1 or Lq, Lk) -> (B, Lq, H)
        out = _attention(self._split(self.query(query)), keys, values, mask,
                         self.dropout if self.training else 0.0)  # (B, h, Lq, d)
        batch, _, length, _ = out.shape
        return self.merge(out.transpose(1, 2).reshape(batch, length, -1))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, memory_keep: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        # query: (B, Lq, H); memory: (B, Lk, H); memory_keep: (B, Lk) bool; bias: (B, h, Lq, Lk)
        keys, values = self.keys_values(memory)
        mask = torch.zeros(memory_keep.shape, dtype=keys.dtype, device=keys.device)
        mask = mask.masked_fill(~memory_keep, torch.finfo(keys.dtype).min)[:, None, None, :]  # (B, 1, 1, Lk); fp16-safe
        if bias is not None:
            mask = mask + bias
        return self.attend(query, keys, values, mask)  # (B, Lq, H)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention; written out when it must drop attention weights on CPU.

    PyTorch's CPU kernel has no dropout, so with ``dropout_p > 0`` it falls back to the
    same written-out steps with its slower ``bernoulli_`` mask (see ``nas.dropout``).
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    # q: (B, h, Lq, d); k, v: (B, h, Lk, d); mask: (B, 1 or h, 1 or Lq, Lk)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + mask  # (B, h, Lq, Lk)
    weights = dropout(torch.softmax(scores, dim=-1), dropout_p, True)
    return torch.matmul(weights, v)  # (B, h, Lq, d)


class ResidualSublayer(nn.Module):
    """``x = LayerNorm(x + Dropout(f(x)))``, MmNas's post-LN sublayer, or with ``sizes.norm_first``
    the pre-LN ``x = x + Dropout(f(LayerNorm(x)))``. Ops compute ``f`` on ``self.normed(x)``.

    ``attention_type`` and ``make_norm`` are the two things another family of the same
    sublayers changes (LXMERT's BERT layers: biased projections, ``nn.LayerNorm``).
    """

    needs_relation = False
    attention_type: type[MultiHeadAttention] = MultiHeadAttention

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__()
        self.drop = Dropout(sizes.dropout)
        self.norm = self.make_norm(sizes.hidden)
        self.norm_first = sizes.norm_first

    @staticmethod
    def make_norm(hidden: int) -> nn.Module:
        return McanLayerNorm(hidden)

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """What ``f`` reads: the normalised stream when pre-LN, the stream itself when post-LN."""
        return self.norm(x) if self.norm_first else x

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            return x + self.drop(update)
        return self.norm(x + self.drop(update))


class SelfAttention(ResidualSublayer):
    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = self.attention_type(sizes)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H) -> (B, L, H)
        query = self.normed(x)
        return self.residual(x, self.attention(query, query, x_keep))


class GuidedAttention(ResidualSublayer):
    """The decoder stream (image regions) attends to the encoder stream (text)."""

    missing_context = "guided attention needs a context (it is a decoder-only op)"

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = self.attention_type(sizes)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, N, H); context: (B, T, H) -> (B, N, H)
        if context is None:
            raise ValueError(self.missing_context)
        return self.residual(x, self.attention(self.normed(x), context, context_keep))


class RelationSelfAttention(ResidualSublayer):
    """Self-attention whose logits get ``log(max(relu(W r_ij), 1e-6))`` per head from box geometry."""

    needs_relation = True

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = self.attention_type(sizes)
        self.relation_to_heads = nn.Linear(sizes.relation_dim, self.attention.heads)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, N, H); relation: (B, N, N, R) -> (B, N, H)
        if relation is None:
            raise ValueError("relation self-attention needs the box relation embedding")
        bias = relation_log_bias(relation, self.relation_to_heads)  # (B, h, N, N)
        query = self.normed(x)
        return self.residual(x, self.attention(query, query, x_keep, bias=bias))


class FeedForward(ResidualSublayer):
    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        inner = sizes.hidden * sizes.ffn_mult
        # ReLU and dropout share one mask (one pass back instead of two); the Identity keeps the
        # second Linear at index 3, its key in checkpoints. Nothing here is in place: Linear's
        # 3-D output is a view, and autograd rebuilds the base of a view changed in place.
        self.net = nn.Sequential(nn.Linear(sizes.hidden, inner), ReluDropout(sizes.dropout), nn.Identity(),
                                 nn.Linear(inner, sizes.hidden))

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H) -> (B, L, H)
        return self.residual(x, self.net(self.normed(x)))


OPS: dict[str, Callable[[OpSizes], nn.Module]] = {
    "self_att": SelfAttention,
    "rel_self_att": RelationSelfAttention,
    "guided_att": GuidedAttention,
    "feed_forward": FeedForward,
}
ENCODER_OPS = ["self_att", "feed_forward"]
DECODER_OPS = ["self_att", "rel_self_att", "guided_att", "feed_forward"]
SHORT_NAMES = {"self_att": "SA", "rel_self_att": "RSA", "guided_att": "GA", "feed_forward": "FFN"}


def make_op(name: str, sizes: OpSizes) -> nn.Module:
    return OPS[name](sizes)
