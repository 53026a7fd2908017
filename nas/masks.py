"""Mask geometry shared by the CLEVR-Ref+ writer and task: grid-cell coverage, tight boxes, box IoU."""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou_xywh", "cell_coverage", "cell_edges", "mask_box"]


def cell_edges(size: int, cells: int) -> np.ndarray:
    """Pixel boundaries of ``cells`` equal cells along an image side of ``size`` pixels."""
    return np.round(np.linspace(0, size, cells + 1)).astype(np.int64)


def cell_coverage(mask: np.ndarray, rows: int, cols: int | None = None) -> np.ndarray:
    """The share of each cell of a ``rows x cols`` grid over the image that ``mask`` (H, W) covers,
    (rows, cols) float32; the grid is the image resized to it, as IEP's square CNN input is."""
    cols = rows if cols is None else cols
    height, width = mask.shape
    if rows > height or cols > width:
        raise ValueError(f"a {rows}x{cols} grid has cells smaller than a pixel of a {height}x{width} mask")
    ys, xs = cell_edges(height, rows), cell_edges(width, cols)
    sums = np.add.reduceat(np.add.reduceat(mask.astype(np.float64), ys[:-1], axis=0), xs[:-1], axis=1)
    areas = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return (sums / areas).astype(np.float32)


def mask_box(mask: np.ndarray) -> list[float]:
    """The tight ``[x, y, w, h]`` pixel box of a boolean (H, W) mask (pixel edges: one pixel is 1 x 1);
    ``[0, 0, 0, 0]`` for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def box_iou_xywh(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes with continuous areas; 0 when either is empty."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
