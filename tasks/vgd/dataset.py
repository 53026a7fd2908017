"""Referring expressions with their image's candidate boxes, as a batch-level dataset."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.features import RegionFeatures
from tasks.vgd.annotations import Expression
from tasks.vgd.boxes import encode_deltas
from tasks.vgd.metric import box_iou, xywh_to_xyxy

__all__ = ["GroundingDataset"]


class GroundingDataset(Dataset):
    """Args:
        expressions: the split's expressions.
        tokens: (S, T) token ids in expression order.
        features: region features (candidate boxes) of the split's images.
        positive_iou: candidates at or above this IoU with the target are positives.
        convention: IoU convention used for the targets ("mmnas" or "simrec").
    """

    def __init__(self, split: str, expressions: list[Expression], tokens: np.ndarray, features: RegionFeatures,
                 positive_iou: float, convention: str) -> None:
        self.split = split
        self.expressions = expressions
        self.tokens = torch.from_numpy(tokens)
        self.features = features
        self.rows = np.asarray([features.row_of[e.image_id] for e in expressions], np.int64)
        self.targets = xywh_to_xyxy(np.asarray([e.box_xywh for e in expressions], np.float32)).astype(np.float32)
        self.sent_ids = torch.tensor([e.sent_id for e in expressions], dtype=torch.int64)
        width = features.boxes.shape[1]
        # IoU of every candidate with the target, once: it defines the score targets.
        self.ious = np.zeros((len(expressions), width), np.float32)
        for index, row in enumerate(self.rows):
            count = int(features.num_regions[row])
            candidates = features.boxes[row, :count]
            self.ious[index, :count] = box_iou(candidates, np.broadcast_to(self.targets[index], candidates.shape),
                                               convention)
        self.positive_iou = positive_iou

    def __len__(self) -> int:
        return len(self.expressions)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, np.int64)
        rows = self.rows[index]
        width = max(int(self.features.num_regions[rows].max()), 1)
        boxes = self.features.boxes[rows, :width]  # (B, N, 4)
        ious = self.ious[index, :width]
        positive = ious >= self.positive_iou
        # KL target: the positives' IoUs, normalised to sum to 1 (MmNas's SCORES_LOSS='kld').
        scores = np.where(positive, ious, 0.0)
        total = scores.sum(1, keepdims=True)
        scores = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
        deltas = encode_deltas(boxes, np.broadcast_to(self.targets[index][:, None, :], boxes.shape))
        return {
            "tokens": self.tokens[index],  # (B, T)
            "features": torch.from_numpy(np.ascontiguousarray(self.features.features[rows, :width])),  # (B, N, D)
            "boxes": torch.from_numpy(boxes),  # (B, N, 4)
            "num_regions": torch.from_numpy(self.features.num_regions[rows]),  # (B,)
            "image_size": torch.from_numpy(self.features.image_size[rows]),  # (B, 2)
            "sent_id": self.sent_ids[index],  # (B,)
            "target_scores": torch.from_numpy(scores.astype(np.float32)),  # (B, N)
            "positive": torch.from_numpy(positive),  # (B, N) bool
            "target_deltas": torch.from_numpy(deltas),  # (B, N, 4)
            "target_box": torch.from_numpy(self.targets[index]),  # (B, 4) xyxy
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
