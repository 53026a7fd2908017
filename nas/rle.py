"""CLEVR-Ref+'s mask run-length encoding.

A mask is written as comma-separated run lengths over the row-major H x W image (320 x 480 in
the release), alternating background and foreground and starting with background, so a mask
whose first pixel is foreground starts with a run of 0 (FORMATS.md section 6).
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode_rle", "decode_rle"]


def encode_rle(mask: np.ndarray) -> str:
    """The run lengths of a boolean (H, W) mask, row-major, background first."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    if flat.size == 0:
        return "0"
    # Positions where the value changes, plus both ends, give the run boundaries.
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return ",".join(str(int(r)) for r in runs)


def decode_rle(text: str, height: int, width: int) -> np.ndarray:
    """The boolean (height, width) mask of a run-length string.

    Raises:
        ValueError: for a run that is not a whole number, a negative run, or runs that do not
            add up to height * width; the message names the bad run or the sums.
    """
    if not isinstance(text, str):
        raise ValueError(f"a mask run-length string was expected, got {type(text).__name__}")
    parts = text.split(",")
    runs = np.empty(len(parts), np.int64)
    for i, part in enumerate(parts):
        try:
            runs[i] = int(part.strip())
        except ValueError:
            shown = part if len(part) <= 20 else part[:17] + "..."
            raise ValueError(f"run {i + 1} is {shown!r}, not a whole number") from None
        if runs[i] < 0:
            raise ValueError(f"run {i + 1} is negative ({runs[i]})")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"the runs add up to {total} pixels, the {height}x{width} image has {height * width}")
    values = np.arange(len(runs)) % 2 == 1  # odd runs are foreground
    return np.repeat(values, runs).reshape(height, width)
