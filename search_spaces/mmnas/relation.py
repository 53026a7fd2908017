"""The box-relation path of relation self-attention, with hand-written backward passes.

Each relation block maps the shared (B, N, N, R) geometry embedding to a per-head logit bias
``log(max(relu(W r + b), 1e-6))``. Autograd's version of this is slow on CPU for reasons
of layout, not arithmetic: the bias is permuted to (B, h, N, N), so its gradient reaches
the (B*N*N, h) @ (h, R) product non-contiguous (150 ms per block at MmNas's shape), and the
embedding's weight gradient is a (R, B*N*N) @ (B*N*N, 4) product that runs at 2 GFLOP/s.
Here both products are taken in the layouts that run fast (20-25 ms each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["embed_geometry", "relation_log_bias"]

_FLOOR = 1e-6


class _GeometryEmbedding(torch.autograd.Function):
    """``relu(geometry @ W^T + b)``; the geometry (from boxes) never needs a gradient."""

    @staticmethod
    def forward(ctx, geometry: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        out = F.relu(F.linear(geometry, weight, bias))
        ctx.save_for_backward(geometry, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        geometry, out = ctx.saved_tensors
        dtype = torch.promote_types(grad.dtype, geometry.dtype)  # under autocast, out is bf16 and geometry not
        grad = torch.where(out > 0, grad, 0.0).reshape(-1, out.shape[-1]).to(dtype)  # (M, R)
        flat = geometry.reshape(-1, geometry.shape[-1]).to(dtype)  # (M, 4)
        return None, (flat.t() @ grad).t(), grad.sum(0)  # (4, M) @ (M, R), not (R, M) @ (M, 4)


class _RelationLogBias(torch.autograd.Function):
    """``log(max(relu(relation @ W^T + b), 1e-6))``, returned as (B, h, N, N)."""

    @staticmethod
    def forward(ctx, relation: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        logits = F.linear(relation, weight, bias)  # (B, N, N, h)
        ctx.save_for_backward(relation, weight, logits)
        return logits.clamp(min=_FLOOR).log().permute(0, 3, 1, 2).contiguous()  # relu is inside the floor

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        relation, weight, logits = ctx.saved_tensors
        grad = grad.permute(0, 2, 3, 1)  # (B, N, N, h), strided
        grad_logits = torch.where(logits > _FLOOR, grad / logits, 0.0).reshape(-1, logits.shape[-1])  # (M, h)
        # Under autocast the saved relation and logits are bf16/fp16 and the weight is not: the
        # gradient products run in the wider type (the engine casts each gradient to its input's type).
        dtype = torch.promote_types(grad_logits.dtype, weight.dtype)
        grad_logits = grad_logits.to(dtype)
        flat = relation.reshape(-1, relation.shape[-1]).to(dtype)  # (M, R)
        grad_relation = F.linear(grad_logits, weight.t().contiguous().to(dtype)).view(relation.shape) \
            if ctx.needs_input_grad[0] else None
        return grad_relation, grad_logits.t() @ flat, grad_logits.sum(0)  # (h, M) @ (M, R): the fast order


def embed_geometry(geometry: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """The shared relation embedding ``relu(linear(geometry))``: (B, N, N, 4) -> (B, N, N, R)."""
    return _GeometryEmbedding.apply(geometry, linear.weight, linear.bias)


def relation_log_bias(relation: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Per-head attention bias of one relation block: (B, N, N, R) -> (B, h, N, N)."""
    return _RelationLogBias.apply(relation, linear.weight, linear.bias)
