"""Mixed ops: supernet blocks that hold every candidate op of one label."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedMixedOp"]


class GatedMixedOp(nn.Module):
    """ProxylessNAS-style binary-gate block (MmNas ``MixedOp``) without global state.

    Its mode lives on the instance and is set by the strategy that owns it:
    ``active`` picks the candidate that runs; when ``gates`` is set (an
    architecture step), every candidate runs and the output is
    ``sum_i gates[i] * o_i`` with the inactive outputs detached, so only the gate
    gradients reach them. ``gates`` carry the softmax Jacobian (straight-through),
    which gives MmNas's ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)``.
    """

    def __init__(self, label: str, candidates: dict[str, nn.Module]) -> None:
        super().__init__()
        self.label = label
        self.names = list(candidates)
        self.candidates = nn.ModuleList(candidates.values())
        self.needs_relation = any(getattr(op, "needs_relation", False) for op in self.candidates)
        self.active = 0
        self.gates: torch.Tensor | None = None

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        if self.gates is None:
            return self.candidates[self.active](*args)
        outputs = []
        for index, op in enumerate(self.candidates):
            out = op(*args)
            outputs.append(out if index == self.active else out.detach())
        stacked = torch.stack(outputs)  # (K, ...) candidate outputs
        return torch.einsum("k,k...->...", self.gates.to(stacked.dtype), stacked)
