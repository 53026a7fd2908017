"""Mixed ops: supernet blocks that hold every candidate op of one label."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedMixedOp"]


class GatedMixedOp(nn.Module):
    """One block of the supernet, holding every candidate of its label, without global state.

    Its mode lives on the instance and is set by the strategy that owns it; the first
    of these that is set wins:

    - ``gates`` (MmNas's architecture step, ProxylessNAS-style binary gates): every
      candidate runs and the output is ``sum_i gates[i] * o_i`` with the inactive
      outputs detached, so only the gate gradients reach them. ``gates`` carry the
      softmax Jacobian (straight-through), which gives MmNas's
      ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)``.
    - ``weights`` (DARTS's continuous relaxation): every candidate runs and the output
      is ``sum_i weights[i] * o_i``, all outputs with their gradients.
    - otherwise ``active`` picks the one candidate that runs; when ``scale`` is set
      (GDAS's hard straight-through sample) its output is multiplied by that 0-dim
      tensor, whose value is 1 and whose gradient reaches the architecture logits.

    Candidates share one call signature (the space passes every input, ops ignore what
    they do not need), so the block forwards its arguments unchanged.
    """

    def __init__(self, label: str, candidates: dict[str, nn.Module]) -> None:
        super().__init__()
        self.label = label
        self.names = list(candidates)
        self.candidates = nn.ModuleList(candidates.values())
        self.needs_relation = any(getattr(op, "needs_relation", False) for op in self.candidates)
        self.active = 0
        self.gates: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        if self.gates is not None:
            outputs = []
            for index, op in enumerate(self.candidates):
                out = op(*args)
                outputs.append(out if index == self.active else out.detach())
            stacked = torch.stack(outputs)  # (K, ...) candidate outputs
            return torch.einsum("k,k...->...", self.gates.to(stacked.dtype), stacked)
        if self.weights is not None:
            # A running sum keeps one extra output alive instead of stacking all K.
            total: torch.Tensor | None = None
            for weight, op in zip(self.weights, self.candidates):
                out = op(*args)  # (B, L, H), like the block's first input
                term = weight.to(out.dtype) * out
                total = term if total is None else total + term
            assert total is not None, f"{self.label}: a mixed op needs at least one candidate"
            return total
        out = self.candidates[self.active](*args)
        if self.scale is not None:
            out = out * self.scale.to(out.dtype)
        return out

    def mode(self) -> tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The current mode, for strategies that switch it temporarily and restore it."""
        return self.active, self.gates, self.weights, self.scale

    def set_mode(self, mode: tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]) -> None:
        self.active, self.gates, self.weights, self.scale = mode

    def run_single(self, index: int) -> None:
        """Run only candidate ``index``, as the child network would (no mixture, no scale)."""
        self.active, self.gates, self.weights, self.scale = index, None, None, None
