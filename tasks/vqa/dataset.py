"""VQA v2 questions, answers and region features as a batch-level dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.errors import UserError
from nas.features import RegionFeatures

__all__ = ["VqaDataset", "VqaSplit"]


@dataclass
class VqaSplit:
    """What a split's files hold, before tensors are made."""

    name: str
    questions: list[dict]
    annotations: list[dict] | None  # None for test splits
    families: dict[int, str] | None = None  # question family, only for the built-in dataset


class VqaDataset(Dataset):
    """Samples of one split (or of several joined with '+'); ``__getitems__`` returns a whole batch.

    Args:
        split: the split's questions and (optional) annotations.
        tokens: (Q, T) int64 question token ids, in question order.
        features: region features of the split's images: one folder's, or several (the vg split's
            images lie in train2014 or val2014; a joined split spans its parts' folders).
        targets: per question, sparse ``(answer id, soft score)`` pairs; None for test splits.
        num_answers: size of the answer vocabulary.
        sources: per question, the index in ``features`` of the folder holding its image; by
            default the first that has the image id.
    """

    def __init__(self, split: VqaSplit, tokens: np.ndarray, features: RegionFeatures | Sequence[RegionFeatures],
                 targets: list[list[tuple[int, float]]] | None, num_answers: int,
                 sources: Sequence[int] | None = None) -> None:
        self.split = split
        self.tokens = torch.from_numpy(tokens)
        self.question_ids = torch.tensor([q["question_id"] for q in split.questions], dtype=torch.int64)
        self.sources = [features] if isinstance(features, RegionFeatures) else list(features)
        dims = {source.feature_dim for source in self.sources}
        if len(dims) > 1:
            folders = ", ".join(f"{s.directory} ({s.feature_dim})" for s in self.sources)
            raise UserError(f"split '{split.name}': region features differ in size between folders: {folders}")
        if sources is None:
            sources = [next(k for k, s in enumerate(self.sources) if q["image_id"] in s.row_of)
                       for q in split.questions]
        self.image_sources = np.asarray(sources, np.int64)
        self.image_rows = np.asarray([self.sources[k].row_of[q["image_id"]]
                                      for k, q in zip(sources, split.questions)], np.int64)
        self.num_answers = num_answers
        self.targets = targets

    @property
    def feature_dim(self) -> int:
        return self.sources[0].feature_dim

    def __len__(self) -> int:
        return len(self.split.questions)

    def lengths(self) -> np.ndarray:
        """Each question's region count (for ``train.group_by_length``)."""
        counts = np.zeros(len(self), np.int64)
        for number, feats in enumerate(self.sources):
            mask = self.image_sources == number
            counts[mask] = feats.num_regions[self.image_rows[mask]]
        return counts

    def _regions(self, sources: np.ndarray, rows: np.ndarray) -> dict[str, torch.Tensor]:
        if (sources == sources[0]).all():  # the usual case: one fancy-indexing gather per array
            feats = self.sources[int(sources[0])]
            width = max(int(feats.num_regions[rows].max()), 1)
            return {"features": torch.from_numpy(np.ascontiguousarray(feats.features[rows, :width])),
                    "boxes": torch.from_numpy(feats.boxes[rows, :width]),
                    "num_regions": torch.from_numpy(feats.num_regions[rows]),
                    "image_size": torch.from_numpy(feats.image_size[rows])}
        # Samples from several folders: one padded batch as wide as its fullest image, filled per folder.
        picks = [(sources == k, feats) for k, feats in enumerate(self.sources) if (sources == k).any()]
        counts = np.zeros(len(rows), np.int64)
        for mask, feats in picks:
            counts[mask] = feats.num_regions[rows[mask]]
        width = max(int(counts.max()), 1)
        features = np.zeros((len(rows), width, self.feature_dim), np.float32)
        boxes = np.zeros((len(rows), width, 4), np.float32)
        image_size = np.zeros((len(rows), 2), np.int64)
        for mask, feats in picks:
            features[mask] = feats.features[rows[mask], :width]
            boxes[mask] = feats.boxes[rows[mask], :width]
            image_size[mask] = feats.image_size[rows[mask]]
        return {"features": torch.from_numpy(features), "boxes": torch.from_numpy(boxes),
                "num_regions": torch.from_numpy(counts), "image_size": torch.from_numpy(image_size)}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        regions = self._regions(self.image_sources[index], self.image_rows[index])
        batch = {
            "tokens": self.tokens[index],  # (B, T)
            "features": regions["features"],  # (B, N, D), N = the most regions of an image in the batch
            "boxes": regions["boxes"],  # (B, N, 4)
            "num_regions": regions["num_regions"],  # (B,)
            "image_size": regions["image_size"],  # (B, 2)
            "question_id": self.question_ids[index],  # (B,)
        }
        if self.targets is not None:
            target = torch.zeros(len(index), self.num_answers)
            for row, sample in enumerate(index):
                for answer, score in self.targets[sample]:
                    target[row, answer] = score
            batch["target"] = target  # (B, A)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
