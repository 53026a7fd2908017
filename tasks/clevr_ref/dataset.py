"""CLEVR-Ref+ expressions over grid features, as a batch-level dataset of H*W cell "regions"."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.masks import cell_coverage
from tasks.clevr_ref.features import cell_boxes
from tasks.clevr_ref.refexps import Refexp
from tasks.clevr_ref.scenes import MASK_HEIGHT, MASK_WIDTH, ClevrScene

__all__ = ["ClevrRefDataset", "object_coverage"]


def object_coverage(scenes: list[ClevrScene], rows: int, cols: int, images: set[int]) -> dict[int, np.ndarray]:
    """Per image of ``images``: (objects, rows*cols) share of each grid cell each object's mask covers."""
    return {k: np.stack([cell_coverage(scenes[k].mask(i), rows, cols).reshape(-1)
                         for i in range(len(scenes[k].objects))]) for k in sorted(images)}


class ClevrRefDataset(Dataset):
    """Args:
        split: the split's name.
        refexps: its expressions (those kept).
        tokens: (R, T) token ids in expression order.
        features: (I, C, H, W) grid features of the split, row = image index.
        coverage: per image index, (objects, H*W) cell coverage of each object (``object_coverage``).
        programs: (R, P) prefix-order program-token ids (``tasks/clevr_ref/programs.py``), or None.
        program_known: (R,) whether each ground-truth program may be used; None = all of them.
    """

    def __init__(self, split: str, refexps: list[Refexp], tokens: np.ndarray, features: np.ndarray,
                 coverage: dict[int, np.ndarray], programs: np.ndarray | None = None,
                 program_known: np.ndarray | None = None) -> None:
        self.split = split
        self.refexps = refexps
        self.tokens = torch.from_numpy(tokens)
        images, channels, rows, cols = features.shape
        self.grid = (rows, cols)
        # (I, H*W, C): cell (r, c) is region r*W + c, as cell_boxes orders the boxes.
        cells = features.reshape(images, channels, -1).transpose(0, 2, 1)
        self.features = torch.from_numpy(np.ascontiguousarray(cells))
        self.boxes = torch.from_numpy(cell_boxes(rows, cols, MASK_HEIGHT, MASK_WIDTH))  # (H*W, 4)
        self.image_index = torch.tensor([r.image_index for r in refexps], dtype=torch.int64)
        self.refexp_index = torch.tensor([r.index for r in refexps], dtype=torch.int64)
        # Masks are disjoint, so the covered share of the union is the sum of the objects' shares.
        self.targets = torch.from_numpy(np.stack([coverage[r.image_index][list(r.output)].sum(0) for r in refexps])
                                        if refexps else np.zeros((0, rows * cols), np.float32)).clamp_(0.0, 1.0)
        self.programs = torch.from_numpy(programs if programs is not None else np.zeros((len(refexps), 0), np.int64))
        self.program_known = (torch.from_numpy(np.asarray(program_known, bool)) if program_known is not None
                              else torch.ones(len(refexps), dtype=torch.bool))

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    def __len__(self) -> int:
        return len(self.refexps)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(np.asarray(indices, np.int64))
        images = self.image_index[index]
        count = len(index)
        cells = self.boxes.shape[0]
        return {
            "tokens": self.tokens[index],  # (B, T)
            "features": self.features[images],  # (B, N=H*W, C)
            "boxes": self.boxes.expand(count, -1, -1).contiguous(),  # (B, N, 4) xyxy pixels
            "num_regions": torch.full((count,), cells, dtype=torch.int64),  # (B,)
            "image_size": torch.tensor([[MASK_HEIGHT, MASK_WIDTH]], dtype=torch.int64).expand(count, -1).contiguous(),
            "target": self.targets[index],  # (B, N) covered share of each cell
            "refexp": self.refexp_index[index],  # (B,) position in the refexps file
            "image_index": images,  # (B,)
            "program": self.programs[index],  # (B, P) <START> prefix-order program tokens <END>, <NULL>-padded
            "program_known": self.program_known[index],  # (B,) bool: the program may be used (IEP's "a few")
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
