"""Recover the H x W layout of grid-cell regions from their boxes.

Tasks on grid features (``clevr_ref``) hand the backbone N = H*W cells in row-major order with
each cell's pixel box; region tasks (``vgd``) hand detector boxes that form no grid. Ops that need
the 2-D layout (multi-scale fusion) ask here and fall back when the answer is None.
"""

from __future__ import annotations

import torch

__all__ = ["grid_shape"]


def grid_shape(boxes: torch.Tensor, keep: torch.Tensor) -> tuple[int, int] | None:
    """(rows, cols) when every row of the batch holds the same row-major grid of cells, else None.

    A grid: the first ``cols`` boxes share their top edge, N = rows * cols, every row of cells
    shares its top edge and every column its left edge, edges increase along rows and columns,
    and no region is padding.
    """
    # boxes: (B, N, 4) xyxy; keep: (B, N) bool
    count = boxes.shape[1]
    if count == 0 or not bool(keep.all()) or not torch.equal(boxes, boxes[:1].expand_as(boxes)):
        return None
    first = boxes[0]  # (N, 4)
    same_top = first[:, 1] == first[0, 1]
    cols = int(same_top.long().cumprod(0).sum())  # leading cells on the first row
    if count % cols:
        return None
    rows = count // cols
    cells = first.reshape(rows, cols, 4)
    rows_aligned = torch.equal(cells[:, :, 1], cells[:, :1, 1].expand(rows, cols))
    cols_aligned = torch.equal(cells[:, :, 0], cells[:1, :, 0].expand(rows, cols))
    increasing = bool((cells[0, 1:, 0] > cells[0, :-1, 0]).all()) and bool((cells[1:, 0, 1] > cells[:-1, 0, 1]).all())
    return (rows, cols) if rows_aligned and cols_aligned and increasing else None
