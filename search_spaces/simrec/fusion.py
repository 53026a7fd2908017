"""Candidate fusions of the cells with the expression (label ``fusion``).

SimREC's ``SimpleFusion`` gates each visual position with the pooled expression:
``act(N(act(N(W_v v)) * act(N(W_q t))))`` (BatchNorm and LeakyReLU(0.1) there; LayerNorm here,
since cells are a (B, N, H) sequence). SimREC's default applies it to each of the visual
backbone's three scales and merges them in its multi-scale neck; ``multi_scale`` does that on one
cell map: pool it to each of ``space.scales``, fuse each scale with the text, mix neighbours
with a 3x3 convolution, upsample to the cell map and sum.

Every op is called as ``op(image, image_keep, text, text_keep, pooled, boxes)`` and returns the
image's shape (B, N, H).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.simrec.grid import grid_shape
from search_spaces.simrec.sizes import SimrecSizes

__all__ = ["TextGate", "SimpleFusion", "MultiScaleFusion"]


def _gated_projection(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.1))


class TextGate(nn.Module):
    """SimREC's simple fusion of positions (B, M, H) with one text vector (B, H)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.visual = _gated_projection(hidden)
        self.text = _gated_projection(hidden)
        self.norm = nn.Sequential(nn.LayerNorm(hidden), nn.LeakyReLU(0.1))

    def forward(self, positions: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        # positions: (B, M, H); pooled: (B, H) -> (B, M, H)
        return self.norm(self.visual(positions) * self.text(pooled).unsqueeze(1))


class SimpleFusion(nn.Module):
    """Each cell multiplied by a projection of the pooled expression."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        self.gate = TextGate(sizes.hidden)

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        # image: (B, N, H); pooled: (B, H) -> (B, N, H)
        return self.gate(image, pooled)


class MultiScaleFusion(nn.Module):
    """Text-gated fusion at every scale of the cell map, upsampled and summed.

    Scale ``s`` average-pools the (rows, cols) map to (ceil(rows/s), ceil(cols/s)). When the regions
    form no grid (``vgd``'s detector boxes), scale 1 fuses every region as it is and every coarser
    scale is the mean of the real regions: the coarsest pooling there is.
    """

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        self.scales = tuple(sizes.scales)
        self.gates = nn.ModuleList(TextGate(sizes.hidden) for _ in self.scales)
        self.mix = nn.ModuleList(nn.Conv2d(sizes.hidden, sizes.hidden, 3, padding=1) for _ in self.scales)
        self.norm = nn.Sequential(nn.LayerNorm(sizes.hidden), nn.LeakyReLU(0.1))

    def forward(self, image, image_keep, text, text_keep, pooled, boxes):
        # image: (B, N, H); image_keep: (B, N) bool; pooled: (B, H); boxes: (B, N, 4) -> (B, N, H)
        shape = grid_shape(boxes, image_keep)
        total = self._on_grid(image, pooled, shape) if shape else self._on_regions(image, image_keep, pooled)
        return self.norm(total)

    def _on_grid(self, image: torch.Tensor, pooled: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        batch, _, hidden = image.shape
        rows, cols = shape
        cell_map = image.transpose(1, 2).reshape(batch, hidden, rows, cols)  # (B, H, rows, cols)
        total = torch.zeros_like(cell_map)
        for scale, gate, mix in zip(self.scales, self.gates, self.mix):
            size = (-(-rows // scale), -(-cols // scale))
            coarse = F.adaptive_avg_pool2d(cell_map, size) if scale > 1 else cell_map  # (B, H, r, c)
            fused = gate(coarse.flatten(2).transpose(1, 2), pooled)  # (B, r*c, H)
            fused = mix(fused.transpose(1, 2).reshape(batch, hidden, *size))  # (B, H, r, c)
            if scale > 1:
                fused = F.interpolate(fused, size=(rows, cols), mode="bilinear", align_corners=False)
            total = total + fused  # (B, H, rows, cols)
        return total.flatten(2).transpose(1, 2)  # (B, N, H)

    def _on_regions(self, image: torch.Tensor, image_keep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        weights = image_keep.to(image.dtype).unsqueeze(-1)  # (B, N, 1)
        mean = (image * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)  # (B, 1, H)
        total = torch.zeros_like(image)
        for scale, gate in zip(self.scales, self.gates):
            total = total + gate(image if scale == 1 else mean, pooled)  # (B, N or 1, H), broadcast
        return total  # (B, N, H)
