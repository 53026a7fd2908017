"""VQA v2 questions, answers and region features as a batch-level dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

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
    """Samples of one split; ``__getitems__`` returns a whole batch.

    Args:
        split: the split's questions and (optional) annotations.
        tokens: (Q, T) int64 question token ids, in question order.
        features: region features of the split's images.
        targets: per question, sparse ``(answer id, soft score)`` pairs; None for test splits.
        num_answers: size of the answer vocabulary.
    """

    def __init__(self, split: VqaSplit, tokens: np.ndarray, features: RegionFeatures,
                 targets: list[list[tuple[int, float]]] | None, num_answers: int) -> None:
        self.split = split
        self.tokens = torch.from_numpy(tokens)
        self.question_ids = torch.tensor([q["question_id"] for q in split.questions], dtype=torch.int64)
        self.image_rows = np.asarray([features.row_of[q["image_id"]] for q in split.questions], np.int64)
        self.features = features
        self.num_answers = num_answers
        self.targets = targets

    def __len__(self) -> int:
        return len(self.split.questions)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        rows = self.image_rows[index]
        # Gather only as many region slots as the fullest image in the batch needs.
        width = max(int(self.features.num_regions[rows].max()), 1)
        batch = {
            "tokens": self.tokens[index],  # (B, T)
            "features": torch.from_numpy(np.ascontiguousarray(self.features.features[rows, :width])),  # (B, N, D)
            "boxes": torch.from_numpy(self.features.boxes[rows, :width]),  # (B, N, 4)
            "num_regions": torch.from_numpy(self.features.num_regions[rows]),  # (B,)
            "image_size": torch.from_numpy(self.features.image_size[rows]),  # (B, 2)
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
