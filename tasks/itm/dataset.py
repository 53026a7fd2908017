"""Image-caption pairs: training triplets with (hard) negatives, and all pairs for ranking."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.features import RegionFeatures
from tasks.itm.precomp import CAPTIONS_PER_IMAGE

__all__ = ["PairBatcher", "MatchingDataset", "AllPairsDataset"]


class PairBatcher:
    """Builds model batches for arbitrary (image row, caption index) pairs of one split."""

    def __init__(self, tokens: np.ndarray, features: RegionFeatures) -> None:
        self.tokens = torch.from_numpy(tokens)
        self.features = features

    @property
    def num_images(self) -> int:
        return len(self.features.image_ids)

    @property
    def num_captions(self) -> int:
        return len(self.tokens)

    def batch(self, images: np.ndarray, captions: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "tokens": self.tokens[captions],  # (B, T)
            "features": torch.from_numpy(np.ascontiguousarray(self.features.features[images])),  # (B, R, D)
            "boxes": torch.from_numpy(np.ascontiguousarray(self.features.boxes[images])),  # (B, R, 4)
            "num_regions": torch.from_numpy(self.features.num_regions[images]),  # (B,)
            "image_size": torch.from_numpy(self.features.image_size[images]),  # (B, 2)
            "image": torch.from_numpy(images.astype(np.int64)),  # (B,)
            "caption": torch.from_numpy(captions.astype(np.int64)),  # (B,)
        }


class MatchingDataset(Dataset):
    """One sample per caption: its positive pair, a negative caption for its image and a
    negative image for it, stacked as ``[positives; negative captions; negative images]``.

    Negatives are random until ``set_hard_negatives`` gives per-image and per-caption
    candidate lists (MmNas: the top-k of a scored random pool), then drawn from those.
    """

    def __init__(self, split: str, pairs: PairBatcher, seed: int) -> None:
        self.split = split
        self.pairs = pairs
        self.rng = np.random.default_rng(seed)
        self.hard_captions: np.ndarray | None = None  # (N_img, k) caption indices
        self.hard_images: np.ndarray | None = None  # (N_cap, k) image rows

    def __len__(self) -> int:
        return self.pairs.num_captions

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def set_hard_negatives(self, captions: np.ndarray | None, images: np.ndarray | None) -> None:
        self.hard_captions, self.hard_images = captions, images

    def _negative_captions(self, images: np.ndarray) -> np.ndarray:
        if self.hard_captions is not None:
            pick = self.rng.integers(0, self.hard_captions.shape[1], len(images))
            return self.hard_captions[images, pick]
        # A random caption of another image: shift by 1..N-1 images.
        shift = self.rng.integers(1, self.pairs.num_images, len(images))
        other = (images + shift) % self.pairs.num_images
        return other * CAPTIONS_PER_IMAGE + self.rng.integers(0, CAPTIONS_PER_IMAGE, len(images))

    def _negative_images(self, captions: np.ndarray) -> np.ndarray:
        if self.hard_images is not None:
            pick = self.rng.integers(0, self.hard_images.shape[1], len(captions))
            return self.hard_images[captions, pick]
        shift = self.rng.integers(1, self.pairs.num_images, len(captions))
        return (captions // CAPTIONS_PER_IMAGE + shift) % self.pairs.num_images

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        captions = np.asarray(indices, np.int64)
        images = captions // CAPTIONS_PER_IMAGE
        all_images = np.concatenate([images, images, self._negative_images(captions)])
        all_captions = np.concatenate([captions, self._negative_captions(images), captions])
        batch = self.pairs.batch(all_images, all_captions)
        batch["label"] = torch.cat([torch.ones(len(captions)), torch.zeros(2 * len(captions))])  # (3B,)
        return batch


class AllPairsDataset(Dataset):
    """Every (image, caption) pair of a set of images, image-major: what ranking needs."""

    def __init__(self, pairs: PairBatcher, images: np.ndarray) -> None:
        self.pairs = pairs
        self.images = np.asarray(images, np.int64)
        self.captions = (self.images[:, None] * CAPTIONS_PER_IMAGE + np.arange(CAPTIONS_PER_IMAGE)).reshape(-1)

    def __len__(self) -> int:
        return len(self.images) * len(self.captions)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        batch = self.pairs.batch(self.images[index // len(self.captions)], self.captions[index % len(self.captions)])
        # Positions in the (images x captions) similarity matrix being filled.
        batch["row"] = torch.from_numpy(index // len(self.captions))
        batch["column"] = torch.from_numpy(index % len(self.captions))
        batch["text_index"] = batch["caption"]  # each caption is paired with every image: encode it once
        return batch
