"""CLEVR-Ref+ scores: IEP-Ref's cumulative IoU, mean IoU and box Acc@0.5.

* cumulative IoU = sum of intersections / sum of unions over all expressions (IEP-Ref's
  ``run_model.py``), so large referents weigh more;
* mean IoU = the average of the per-expression IoUs;
* Acc@0.5: the tight box of the predicted mask against the tight box of the union of the referred
  objects' masks, a hit when IoU >= 0.5 (continuous areas).

All three are percentages. Masks are boolean (320, 480) arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from nas.masks import box_iou_xywh, mask_box

__all__ = ["MaskScore", "ClevrRefScores", "score_mask", "clevr_ref_scores"]


@dataclass(frozen=True)
class MaskScore:
    """One expression's counts: pixels in both masks, in either, and whether the boxes match."""

    intersection: int
    union: int
    box_hit: bool


@dataclass
class ClevrRefScores:
    cumulative_iou: float
    mean_iou: float
    accuracy: float  # Acc@0.5 of the boxes
    num_refexps: int
    per_family: dict[str, float] = field(default_factory=dict)  # cumulative IoU per family

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.per_family:
            del out["per_family"]
        return out


def score_mask(predicted: np.ndarray, target: np.ndarray, box: list[float] | None = None) -> MaskScore:
    """Counts of one predicted mask against its target; ``box`` is the predicted box ([x, y, w, h]),
    by default the tight box of ``predicted``."""
    box = mask_box(predicted) if box is None else box
    return MaskScore(int(np.count_nonzero(predicted & target)), int(np.count_nonzero(predicted | target)),
                     box_iou_xywh(box, mask_box(target)) >= 0.5)


def _cumulative(scores: list[MaskScore]) -> float:
    union = sum(s.union for s in scores)
    return 100.0 * sum(s.intersection for s in scores) / union if union else 0.0


def clevr_ref_scores(scores: Iterable[MaskScore], families: Iterable[str] | None = None) -> ClevrRefScores:
    """The three scores over every expression; ``families`` (one name per score) adds per-family
    cumulative IoU."""
    scores = list(scores)
    ious = [s.intersection / s.union if s.union else 1.0 for s in scores]  # both empty: a perfect match
    per_family: dict[str, list[MaskScore]] = {}
    for name, score in zip(families or [], scores):
        per_family.setdefault(name, []).append(score)
    return ClevrRefScores(
        cumulative_iou=round(_cumulative(scores), 4),
        mean_iou=round(100.0 * float(np.mean(ious)) if ious else 0.0, 4),
        accuracy=round(100.0 * sum(s.box_hit for s in scores) / len(scores) if scores else 0.0, 4),
        num_refexps=len(scores),
        per_family={name: round(_cumulative(group), 2) for name, group in sorted(per_family.items())})
