"""The unified stack's candidate ops: BERT sublayers over the joint [regions; text] sequence.

Every op is called as ``op(x, attention_mask, relation)``: ``x`` is (B, S, H) with the N region
slots first, ``attention_mask`` an additive (B, 1, S, S) float mask that says which keys each query
may read (bidirectional or sequence-to-sequence, see ``masks.py``), ``relation`` the (B, N, N, R)
box-geometry embedding or None. The mask is what switches one set of weights between
understanding and generation, so every op must honour it and no op may look past it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from search_spaces.lxmert import ops as bert_ops
from search_spaces.lxmert.ops import OpSizes
from search_spaces.mmnas.relation import relation_log_bias

__all__ = ["OpSizes", "OPS", "ATTENTION_OPS", "FFN_OPS", "PARAMETER_FREE", "SHORT_NAMES", "make_op"]


def _all_keys(x: torch.Tensor) -> torch.Tensor:
    # The attention's padding mask: padding is already in ``attention_mask``.
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # (B, S)


class JointSelfAttention(bert_ops.SelfAttention):
    """BERT self-attention over [regions; text], restricted by the mask."""

    def forward(self, x, attention_mask, relation=None):
        # x: (B, S, H); attention_mask: (B, 1, S, S) -> (B, S, H)
        return self.residual(x, self.attention(x, x, _all_keys(x), bias=attention_mask))


class JointRelationAttention(bert_ops.SelfAttention):
    """Self-attention whose region-to-region logits get MmNas's per-head geometry bias
    ``log(max(relu(W r_ij), 1e-6))``; text rows and columns get none."""

    needs_relation = True

    def __init__(self, sizes: OpSizes) -> None:
        super().__init__(sizes)
        self.relation_to_heads = nn.Linear(sizes.relation_dim, self.attention.heads)

    def forward(self, x, attention_mask, relation=None):
        # x: (B, S, H); attention_mask: (B, 1, S, S); relation: (B, N, N, R) -> (B, S, H)
        if relation is None:
            raise ValueError("relation attention needs the box relation embedding")
        regions = relation.shape[1]
        geometry = relation_log_bias(relation, self.relation_to_heads)  # (B, h, N, N)
        bias = attention_mask.expand(-1, geometry.shape[1], -1, -1).clone()  # (B, h, S, S)
        bias[:, :, :regions, :regions] += geometry
        return self.residual(x, self.attention(x, x, _all_keys(x), bias=bias))


class FeedForward(bert_ops.FeedForward):
    """BERT's feed-forward sublayer (position-wise, so the mask does not concern it)."""

    def forward(self, x, attention_mask=None, relation=None):
        # x: (B, S, H) -> (B, S, H)
        return super().forward(x, None)


class Identity(nn.Module):
    """A skipped sublayer: how the stack's depth is searched."""

    needs_relation = False

    def forward(self, x, attention_mask=None, relation=None):
        return x


OPS: dict[str, Callable[[OpSizes], nn.Module]] = {
    "self_att": JointSelfAttention,
    "rel_self_att": JointRelationAttention,
    "feed_forward": FeedForward,
    "identity": lambda sizes: Identity(),
}
ATTENTION_OPS = ["self_att", "rel_self_att", "identity"]
FFN_OPS = ["feed_forward", "identity"]
PARAMETER_FREE = frozenset({"identity"})
SHORT_NAMES = {"self_att": "SA", "rel_self_att": "RSA", "feed_forward": "FFN", "identity": "-"}


def make_op(name: str, sizes: OpSizes) -> nn.Module:
    return OPS[name](sizes)
