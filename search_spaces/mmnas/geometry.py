"""Pairwise box geometry for relation self-attention (Relation Networks / MmNas)."""

from __future__ import annotations

import torch

__all__ = ["box_geometry"]


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """Relative geometry of every ordered pair of boxes.

    For boxes i, j in pixel xyxy with w, h = size + 1 and centres (cx, cy):
    ``[log max(|cx_i-cx_j|/w_i, 1e-3), log max(|cy_i-cy_j|/h_i, 1e-3), log(w_i/w_j), log(h_i/h_j)]``,
    exactly MmNas's ``relation_embedding``, computed batched on the model's device
    instead of per sample in the data loader.

    Args:
        boxes: (B, N, 4) xyxy pixel boxes; padded rows may be zeros.
    Returns:
        (B, N, N, 4) float tensor.
    """
    boxes = boxes.float()
    width = boxes[..., 2] - boxes[..., 0] + 1.0  # (B, N)
    height = boxes[..., 3] - boxes[..., 1] + 1.0
    # Degenerate padded boxes must not produce log(0) or division by zero.
    width = width.clamp(min=1e-3)
    height = height.clamp(min=1e-3)
    cx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    dx = (cx.unsqueeze(2) - cx.unsqueeze(1)).abs() / width.unsqueeze(2)  # (B, N, N)
    dy = (cy.unsqueeze(2) - cy.unsqueeze(1)).abs() / height.unsqueeze(2)
    dw = width.unsqueeze(2) / width.unsqueeze(1)
    dh = height.unsqueeze(2) / height.unsqueeze(1)
    return torch.stack([dx.clamp(min=1e-3).log(), dy.clamp(min=1e-3).log(), dw.log(), dh.log()], dim=-1)
