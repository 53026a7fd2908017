"""LXMERT's sublayers as candidate ops, with MmNas's op signature.

Every op is called as ``op(x, x_keep, context, context_keep, relation)`` and
returns a tensor shaped like ``x`` (one stream), so a strategy's mixed op can
hold any of them at one label. The layers follow BERT as LXMERT uses it
(airsplay/lxmert ``src/lxrt/modeling.py``): attention projections and output
dense with biases, a GELU feed-forward, and post-LayerNorm residuals
``LayerNorm(x + Dropout(f(x)))`` with ``nn.LayerNorm(eps=1e-12)``; ``space.norm=pre`` builds
pre-LN residuals instead.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import nn

from search_spaces.mmnas import ops as mmnas_ops
from search_spaces.mmnas.ops import MultiHeadAttention, OpSizes

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


class _Bert:
    """What makes an MmNas sublayer a BERT one: biased attention projections and ``nn.LayerNorm``
    with BERT's eps (``BertSelfOutput`` / ``BertOutput``); the residual and the ops are MmNas's."""

    attention_type = BertAttention

    @staticmethod
    def make_norm(hidden: int) -> nn.Module:
        return nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)


class SelfAttention(_Bert, mmnas_ops.SelfAttention):
    """BERT's self-attention sublayer."""


class CrossAttention(_Bert, mmnas_ops.GuidedAttention):
    """LXMERT's ``BertCrossattLayer``: one stream attends to the other (``context``)."""

    missing_context = "cross attention needs the other stream as context"

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        # Pre-LN leaves the other stream a raw residual sum as well, so it is normalised before it
        # gives keys and values; post-LN streams leave every sublayer normalised already.
        self.context_norm = self.make_norm(sizes.hidden) if sizes.norm_first else None

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H); context: (B, M, H) -> (B, L, H)
        if context is not None and self.context_norm is not None:
            context = self.context_norm(context)
        return super().forward(x, x_keep, context, context_keep, relation)


class RelationSelfAttention(_Bert, mmnas_ops.RelationSelfAttention):
    """Object self-attention with MmNas's per-head box-geometry bias ``log(max(relu(W r_ij), 1e-6))``."""


class FeedForward(_Bert, mmnas_ops.ResidualSublayer):
    """BERT's ``BertIntermediate`` + ``BertOutput``: Linear, GELU, Linear."""

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        inner = sizes.hidden * sizes.ffn_mult
        self.intermediate = nn.Linear(sizes.hidden, inner)
        self.output = nn.Linear(inner, sizes.hidden)

    def forward(self, x, x_keep, context=None, context_keep=None, relation=None):
        # x: (B, L, H) -> (B, L, H)
        return self.residual(x, self.output(F.gelu(self.intermediate(self.normed(x)))))  # (B, L, 4H) inside


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
