"""Caption splits as two batch-level datasets: one row per reference caption (training) and one
row per image (evaluation: decode a caption, answer every question about the image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.features import RegionFeatures
from tasks.caption.vocab import SPECIAL

__all__ = ["CaptionSplit", "CaptionTrainingSet", "CaptionImageSet", "QuestionSet"]


@dataclass
class QuestionSet:
    """The VQA questions about a split's images."""

    question_ids: np.ndarray  # (Q,) int64
    image_rows: np.ndarray  # (Q,) row of each question's image in the split's features
    tokens: np.ndarray  # (Q, Tq) int64
    targets: list[list[tuple[int, float]]] | None  # sparse soft scores per question; None when unlabelled
    num_answers: int


@dataclass
class CaptionSplit:
    """What the files of one split hold, as arrays.

    ``image_ids`` are the split's images in file order; ``references`` their raw reference captions
    (None for a test split); ``caption_rows``/``caption_tokens`` one entry per reference caption.
    """

    name: str
    image_ids: list[int]
    references: dict[int, list[str]] | None
    features: RegionFeatures
    caption_rows: np.ndarray  # (C,) feature row of each caption's image
    caption_tokens: np.ndarray  # (C, L) BOS words EOS padding
    questions: QuestionSet | None

    def image_rows(self) -> np.ndarray:
        return np.asarray([self.features.row_of[i] for i in self.image_ids], np.int64)


def _regions(features: RegionFeatures, rows: np.ndarray) -> dict[str, torch.Tensor]:
    width = max(int(features.num_regions[rows].max()), 1)
    return {"features": torch.from_numpy(np.ascontiguousarray(features.features[rows, :width])),  # (B, N, D)
            "boxes": torch.from_numpy(features.boxes[rows, :width]),  # (B, N, 4)
            "num_regions": torch.from_numpy(features.num_regions[rows]),  # (B,)
            "image_size": torch.from_numpy(features.image_size[rows])}  # (B, 2)


def _questions_by_row(questions: QuestionSet) -> dict[int, list[int]]:
    """Feature row -> indices of the questions about that image, in question order."""
    by_row: dict[int, list[int]] = {}
    for index, row in enumerate(questions.image_rows.tolist()):
        by_row.setdefault(row, []).append(index)
    return by_row


def _targets(questions: QuestionSet, picked: np.ndarray) -> torch.Tensor:
    target = torch.zeros(len(picked), questions.num_answers)
    for row, question in enumerate(picked):
        for answer, score in questions.targets[question]:
            target[row, answer] = score
    return target  # (B, A)


class CaptionTrainingSet(Dataset):
    """One sample per reference caption; with questions, each caption brings one question about its
    image (the image's questions in turn, so every question is seen as often as its image's captions)."""

    def __init__(self, split: CaptionSplit) -> None:
        self.split = split
        self.images = CaptionImageSet(split)
        self.question_of = None
        questions = split.questions
        if questions is not None and questions.targets is not None and len(split.caption_rows):
            by_row = _questions_by_row(questions)
            seen: dict[int, int] = {}
            picks = []
            for row in split.caption_rows.tolist():
                choices = by_row.get(row)
                if not choices:  # an image without questions: this split cannot train VQA
                    picks = None
                    break
                picks.append(choices[seen.get(row, 0) % len(choices)])
                seen[row] = seen.get(row, 0) + 1
            self.question_of = None if picks is None else np.asarray(picks, np.int64)

    def __len__(self) -> int:
        return len(self.split.caption_rows)

    def images_of(self, indices: Sequence[int]) -> CaptionImageSet:
        """The images whose captions are at ``indices`` (a held-out part of this set), in order."""
        position = {row: k for k, row in enumerate(self.split.image_rows().tolist())}
        wanted = dict.fromkeys(position[row] for row in self.split.caption_rows[np.asarray(indices, np.int64)].tolist())
        return CaptionImageSet(self.split, list(wanted))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        rows = self.split.caption_rows[index]
        batch = {**_regions(self.split.features, rows),
                 "tokens": torch.from_numpy(self.split.caption_tokens[index]),  # (B, L)
                 "image_id": torch.from_numpy(self.split.features.image_ids[rows].astype(np.int64))}  # (B,)
        if self.question_of is not None:
            picked = self.question_of[index]
            questions = self.split.questions
            batch["question_tokens"] = torch.from_numpy(questions.tokens[picked])  # (B, Tq)
            batch["target"] = _targets(questions, picked)  # (B, A)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}


class CaptionImageSet(Dataset):
    """One sample per image (all of the split's, or those at ``image_indices`` of ``split.image_ids``):
    the features, and every question about it (padded, id -1)."""

    def __init__(self, split: CaptionSplit, image_indices: Sequence[int] | None = None) -> None:
        self.split = split
        self.image_indices = list(range(len(split.image_ids)) if image_indices is None else image_indices)
        self.image_ids = [split.image_ids[k] for k in self.image_indices]
        self.rows = split.image_rows()[np.asarray(self.image_indices, np.int64)]
        self.question_table = None
        if split.questions is not None:
            by_row = _questions_by_row(split.questions)
            width = max((len(v) for v in by_row.values()), default=0)
            table = np.full((len(self.rows), max(width, 1)), -1, np.int64)
            for k, row in enumerate(self.rows.tolist()):
                found = by_row.get(row, [])
                table[k, : len(found)] = found
            self.question_table = table  # (I, Qmax) question index or -1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        rows = self.rows[index]
        batch = {**_regions(self.split.features, rows),
                 "image_id": torch.tensor([self.image_ids[i] for i in index], dtype=torch.int64)}  # (B,)
        if self.question_table is not None:
            picked = self.question_table[index]  # (B, Q)
            questions = self.split.questions
            safe = np.maximum(picked, 0)
            tokens = questions.tokens[safe]  # (B, Q, Tq)
            tokens[picked < 0] = SPECIAL.pad
            tokens[picked < 0, 0] = SPECIAL.bos  # a padded slot still has one real position to pool
            batch["question_tokens"] = torch.from_numpy(tokens)
            batch["question_id"] = torch.from_numpy(np.where(picked < 0, -1, questions.question_ids[safe]))  # (B, Q)
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
