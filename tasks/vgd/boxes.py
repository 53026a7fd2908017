"""Box-regression targets for grounding: Fast R-CNN deltas, normalised as in MmNas."""

from __future__ import annotations

import numpy as np

__all__ = ["DELTA_STD", "encode_deltas", "decode_deltas"]

# MmNas normalises regression targets by these standard deviations.
DELTA_STD = np.array([0.1, 0.1, 0.2, 0.2], np.float32)


def _centre_size(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    # Fast R-CNN's pixel convention: a box from x1 to x2 covers x2 - x1 + 1 pixels.
    width = boxes[..., 2] - boxes[..., 0] + 1.0
    height = boxes[..., 3] - boxes[..., 1] + 1.0
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def encode_deltas(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Normalised (dx, dy, log dw, log dh) from ``proposals`` (..., 4) xyxy to ``targets`` (..., 4)."""
    pcx, pcy, pw, ph = _centre_size(proposals)
    tcx, tcy, tw, th = _centre_size(targets)
    pw, ph = np.maximum(pw, 1.0), np.maximum(ph, 1.0)
    deltas = np.stack([(tcx - pcx) / pw, (tcy - pcy) / ph, np.log(np.maximum(tw, 1.0) / pw),
                       np.log(np.maximum(th, 1.0) / ph)], axis=-1)
    return (deltas / DELTA_STD).astype(np.float32)


def decode_deltas(proposals: np.ndarray, deltas: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Apply normalised deltas to proposals (N, 4) and clip to the image; returns xyxy."""
    pcx, pcy, pw, ph = _centre_size(proposals)
    dx, dy, dw, dh = np.moveaxis(deltas * DELTA_STD, -1, 0)
    dw, dh = np.minimum(dw, np.log(1000 / 16)), np.minimum(dh, np.log(1000 / 16))  # as Fast R-CNN caps them
    cx, cy = pcx + dx * pw, pcy + dy * ph
    w, h = pw * np.exp(dw), ph * np.exp(dh)
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1.0, cy + 0.5 * h - 1.0], axis=-1)
    boxes[..., 0::2] = np.clip(boxes[..., 0::2], 0, (width - 1)[..., None])
    boxes[..., 1::2] = np.clip(boxes[..., 1::2], 0, (height - 1)[..., None])
    return boxes
