"""LXMERT's sublayers as candidate ops, with MmNas's op signature.

Every op is called as ``op(x, x_keep, context, context_keep, relation)`` and
returns a tensor shaped like ``x`` (one stream), so a strategy's mixed op can
hold any of them at one label. The layers follow BERT as LXMERT uses it
(airsplay/lxmert ``src/lxrt/modeling.py``): attention projections and output
dense with biases, a GELU feed-forward, and post-LayerNorm residuals
``LayerNorm(x + Dropout(f(x)))`` with ``nn.LayerNorm(eps=1e-12)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.dropout import Dropout
from search_spaces.mmnas.ops import MultiHeadAttention, OpSizes
from search_spaces.mmnas.relation import relation_log_bias

__all__ = ["OpSizes", "OPS", "LANG_SELF_OPS", "OBJ_SELF_OPS", "CROSS_OPS", "FFN_OPS", "PARAMETER_FREE",
           "SHORT_NAMES", "make_op"]

LAYER_NORM_EPS = 1e-12  # BERT's


class BertAttention(MultiHeadAttention):
    """MmNas's multi-head attention with BERT's biased query/key/value and output projections."""

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        # The parent's forward (masking, fused or written-out attention with the fast dropout) is
        # kept; only its four bias-free projections are replaced.
        self.query, self.key, self.value, self.merge = (nn.Linear(sizes.hidden, sizes.hidden) for _ in range(4))


class _BertResidual(nn.Module):
    """``x = LayerNorm(x + Dropout(f(x)))``: BERT's ``BertSelfOutput`` / ``BertOutput``."""

    needs_relation = False

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__()
        self.drop = Dropout(sizes.dropout)
        self.norm = nn.LayerNorm(sizes.hidden, eps=LAYER_NORM_EPS)

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(update))


class SelfAttention(_BertResidual):
    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = BertAttention(sizes)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H) -> (B, L, H)
        return self.residual(x, self.attention(x, x, x_keep))


class CrossAttention(_BertResidual):
    """LXMERT's ``BertCrossattLayer``: one stream attends to the other (``context``)."""

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = BertAttention(sizes)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H); context: (B, M, H) -> (B, L, H)
        if context is None:
            raise ValueError("cross attention needs the other stream as context")
        return self.residual(x, self.attention(x, context, context_keep))


class RelationSelfAttention(_BertResidual):
    """Object self-attention with MmNas's per-head box-geometry bias ``log(max(relu(W r_ij), 1e-6))``."""

    needs_relation = True

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.attention = BertAttention(sizes)
        self.relation_to_heads = nn.Linear(sizes.relation_dim, self.attention.heads)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, N, H); relation: (B, N, N, R) -> (B, N, H)
        if relation is None:
            raise ValueError("relation self-attention needs the box relation embedding")
        bias = relation_log_bias(relation, self.relation_to_heads)  # (B, h, N, N)
        return self.residual(x, self.attention(x, x, x_keep, bias=bias))


class FeedForward(_BertResidual):
    """BERT's ``BertIntermediate`` + ``BertOutput``: Linear, GELU, Linear."""

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        inner = sizes.hidden * sizes.ffn_mult
        self.intermediate = nn.Linear(sizes.hidden, inner)
        self.output = nn.Linear(inner, sizes.hidden)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H) -> (B, L, H)
        return self.residual(x, self.output(F.gelu(self.intermediate(x))))  # (B, L, 4H) inside


class Identity(nn.Module):
    """The skipped sublayer: how a stream's depth is searched."""

    needs_relation = False

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        return x


OPS: dict[str, Callable[[OpSizes], nn.Module]] = {
    "self_att": SelfAttention,
    "rel_self_att": RelationSelfAttention,
    "cross_att": CrossAttention,
    "feed_forward": FeedForward,
    "identity": lambda sizes: Identity(),
}
LANG_SELF_OPS = ["self_att", "identity"]
OBJ_SELF_OPS = ["self_att", "rel_self_att", "identity"]
CROSS_OPS = ["cross_att", "identity"]
FFN_OPS = ["feed_forward", "identity"]
PARAMETER_FREE = frozenset({"identity"})
SHORT_NAMES = {"self_att": "SA", "rel_self_att": "RSA", "cross_att": "X", "feed_forward": "FFN", "identity": "-"}


def make_op(name: str, sizes: OpSizes) -> nn.Module:
    return OPS[name](sizes)
