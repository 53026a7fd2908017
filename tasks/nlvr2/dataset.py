"""NLVR2 examples as batches of two rows each: (sentence, left image) and (sentence, right image).

Any search space encodes a sentence with one image, so a pair is two ordinary rows, as in
LXMERT's NLVR2 model, and the head joins them again (``tasks/nlvr2/head.py``). Rows are
interleaved, ``2i`` the left and ``2i + 1`` the right image of example ``i``, so the head's
``view(B, 2 * D)`` concatenates each pair as [left, right]. ``example`` holds one entry per
example, which is how the shared loops count samples (``nas.data.count_samples``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.features import RegionFeatures

__all__ = ["Nlvr2Dataset"]


class Nlvr2Dataset(Dataset):
    """Examples of one split; ``__getitems__`` returns a whole batch of 2B rows.

    Args:
        name: the split's name.
        numbers: (E,) example numbers, which the task maps back to NLVR2 identifiers.
        tokens: (E, T) int64 sentence token ids.
        features: the region features holding both images of every example.
        left_rows, right_rows: (E,) rows of each example's images in ``features``.
        labels: (E,) booleans, or None for a split without labels.
    """

    def __init__(self, name: str, numbers: np.ndarray, tokens: np.ndarray, features: RegionFeatures,
                 left_rows: np.ndarray, right_rows: np.ndarray, labels: np.ndarray | None) -> None:
        self.name = name
        self.numbers = torch.as_tensor(numbers, dtype=torch.int64)
        self.tokens = torch.from_numpy(tokens)
        self.features = features
        self.rows = np.stack([left_rows, right_rows], axis=1).astype(np.int64)  # (E, 2)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.float32)

    @property
    def feature_dim(self) -> int:
        return self.features.feature_dim

    def __len__(self) -> int:
        return len(self.numbers)

    def lengths(self) -> np.ndarray:
        """Each example's width in regions, its fuller image's (for ``train.group_by_length``)."""
        return self.features.num_regions[self.rows].max(axis=1)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        rows = self.rows[index].reshape(-1)  # (2B,) left, right, left, right, ...
        feats = self.features
        width = max(int(feats.num_regions[rows].max()), 1)
        batch = {
            "tokens": self.tokens[index].repeat_interleave(2, dim=0),  # (2B, T): each sentence twice
            "features": torch.from_numpy(np.ascontiguousarray(feats.features[rows, :width])),  # (2B, N, D)
            "boxes": torch.from_numpy(feats.boxes[rows, :width]),  # (2B, N, 4)
            "num_regions": torch.from_numpy(feats.num_regions[rows]),  # (2B,)
            "image_size": torch.from_numpy(feats.image_size[rows]),  # (2B, 2)
            "example": self.numbers[index],  # (B,)
        }
        if self.labels is not None:
            batch["label"] = self.labels[index]  # (B,) 1.0 for "True"
        return batch
