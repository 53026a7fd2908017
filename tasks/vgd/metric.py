"""Official visual-grounding accuracy (Acc@0.5) for RefCOCO, RefCOCO+ and RefCOCOg.

Sources of the rules, read at these commits:

* MILVLG/mmnas@552e29e666 -- ``train_vgd.py`` (``eval``): a prediction is a hit
  when ``bbox_overlaps(pred, gt) >= 0.5``; accuracy is
  ``acc_num / float(all_num) * 100.``. ``mmnas/utils/bbox.pyx``
  (``bbox_overlaps``, from Fast R-CNN): widths and heights are ``x2 - x1 + 1``,
  the intersection is ``iw = min(x2) - max(x1) + 1`` (likewise ``ih``) and
  counts only when ``iw > 0`` and ``ih > 0``; union = pred area + GT area - iw*ih.
  ``mmnas/loader/load_data_vgd.py``: GT ``x2 = x + w``, ``y2 = y + h``.
* luogen1996/SimREC@e8136cceab -- ``tools/eval_engine.py`` and
  ``simrec/models/utils/box_op.py`` (``batch_box_iou``): continuous areas,
  intersection sides clamped at 0, a hit when ``iou > 0.5`` (strict), with the
  same ``x2 = x + w`` GT conversion.
* lichengunc/refer@e3bbaa30d2 ``refer.py`` (``getRefBox``, ``Sents``) and
  mmnas ``tools/ref_process.py``: one expression per entry of a ref's
  ``sentences``, keyed by its ``sent_id``; its GT box is the ``bbox`` (COCO
  xywh) of the ``instances.json`` annotation whose ``id`` is ``ref['ann_id']``.

So the two conventions disagree in two ways: the +1 areas, and ``>=`` versus
``>`` at exactly 0.5. Pick the one of the paper you compare with.

Differences from the official code, all deliberate:

* We compute in float64. MmNas rounds the GT box to float32 before scoring
  and SimREC scores in float32, so an IoU within about 1e-7 of 0.5 can land
  on the other side there.
* Boxes are scored as given. MmNas clips its decoded boxes to the image
  (``clip_boxes``: ``[0, W-1] x [0, H-1]``) before scoring; that belongs to the
  model's box decoding, not to this metric.
* A union of zero (only possible with ``"simrec"`` and empty boxes) scores
  IoU 0, where SimREC would compute NaN and also count a miss.

Predictions file (our format): a JSON list with one object per expression
(sentence) of the evaluated split::

    [{"sent_id": 0, "bbox": [103.9, 300.0, 134.2, 177.4]}, ...]

``bbox`` is ``[x, y, w, h]`` in pixels of the original image (COCO xywh, the
same form as the ``instances.json`` boxes), with ``w, h >= 0``. Other keys are
ignored. Every ``sent_id`` of the split must appear exactly once, and no other.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nas.errors import UserError
from nas.io import read_json
from nas.safe_pickle import load_plain_pickle

__all__ = [
    "CONVENTIONS",
    "VgdScores",
    "accuracy_at_05",
    "box_iou",
    "evaluate_vgd_files",
    "xywh_to_xyxy",
]

# Convention name -> (pixel-area offset, threshold is inclusive).
_RULES: dict[str, tuple[float, bool]] = {"mmnas": (1.0, True), "simrec": (0.0, False)}
CONVENTIONS: tuple[str, ...] = tuple(_RULES)
THRESHOLD = 0.5
# How many offending ids an error message lists.
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class VgdScores:
    """Acc@0.5 in percent (unrounded) over the expressions of one split."""

    accuracy: float
    num_expressions: int
    convention: str
    num_hits: int
    split: str | None = None

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "num_expressions": self.num_expressions,
            "num_hits": self.num_hits,
            "convention": self.convention,
            "split": self.split,
        }


# --------------------------------------------------------------------------
# Boxes and IoU
# --------------------------------------------------------------------------

def _check_convention(convention: str) -> tuple[float, bool]:
    if convention not in _RULES:
        raise UserError(f"unknown box convention {convention!r}; valid conventions: "
                        f"{', '.join(CONVENTIONS)}")
    return _RULES[convention]


def _as_boxes(boxes: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name}: boxes must be an (N, 4) array of numbers") from None
    if array.ndim != 2 or array.shape[1] != 4:
        raise UserError(f"{name}: boxes must be an (N, 4) array, got shape {array.shape}")
    return array


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` with ``x2 = x + w``, ``y2 = y + h``.

    Accepts one box (shape ``(4,)``) or many (``(N, 4)``); returns float64 of
    the same shape. No ``- 1``: both official codebases convert this way even
    though MmNas then adds 1 back in its areas.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.shape[-1:] != (4,) or array.ndim > 2:
        raise UserError(f"boxes must have shape (4,) or (N, 4), got {array.shape}")
    out = array.copy()
    out[..., 2] = array[..., 0] + array[..., 2]
    out[..., 3] = array[..., 1] + array[..., 3]
    return out


def box_iou(a: np.ndarray, b: np.ndarray, convention: str) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for each row; both ``(N, 4)`` xyxy pixels.

    ``"mmnas"``: Fast R-CNN areas ``(x2 - x1 + 1) * (y2 - y1 + 1)`` and the
    same +1 on the intersection sides. ``"simrec"``: continuous areas.
    """
    offset, _ = _check_convention(convention)
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    if a.shape[0] != b.shape[0]:
        raise UserError(f"box_iou pairs rows, but a has {a.shape[0]} boxes and b has {b.shape[0]}")
    inter_w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + offset
    inter_h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + offset
    # bbox.pyx counts an overlap only when both sides are > 0; SimREC clamps
    # the sides at 0. Both give an intersection of 0 otherwise.
    overlaps = (inter_w > 0) & (inter_h > 0)
    inter = np.where(overlaps, inter_w * inter_h, 0.0)
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    union = area_a + area_b - inter
    iou = np.zeros(a.shape[0], dtype=np.float64)
    np.divide(inter, union, out=iou, where=overlaps & (union > 0))
    return iou


def _hits(pred_xyxy: Any, gt_xyxy: Any, convention: str) -> np.ndarray:
    _, inclusive = _check_convention(convention)
    iou = box_iou(pred_xyxy, gt_xyxy, convention)
    return iou >= THRESHOLD if inclusive else iou > THRESHOLD


def accuracy_at_05(pred_xyxy: Any, gt_xyxy: Any, convention: str = "mmnas") -> float:
    """Percent of rows whose predicted box hits its GT box (``mmnas``: IoU >= 0.5, ``simrec``: > 0.5)."""
    hits = _hits(pred_xyxy, gt_xyxy, convention)
    if hits.size == 0:
        raise UserError("no boxes to evaluate")
    # Same expression as MmNas' train_vgd.py.
    return int(hits.sum()) / float(hits.size) * 100.0


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean",
             int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True would silently match id 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _examples(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids)[:_MAX_EXAMPLES])


def _ids_phrase(count: int) -> str:
    return f"{count} sent_id" if count == 1 else f"{count} sent_ids"


def _check_xywh(value: Any, where: str) -> list[float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise UserError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, w, h], got {value!r}")
    try:
        box = [float(v) for v in value]
    except OverflowError:  # an integer too large for a float
        box = [math.inf]
    if not all(math.isfinite(v) for v in box):
        raise UserError(f"{where}: 'bbox' has a non-finite value: {value!r}")
    if box[2] < 0 or box[3] < 0:
        raise UserError(f"{where}: 'bbox' is [x, y, w, h] and needs w >= 0 and h >= 0, got {value!r}")
    return box


def _split_expressions(refs: Any, split: str, refs_path: str | os.PathLike) -> dict[int, int]:
    """``sent_id -> ann_id`` for every sentence of ``split``, checking the refs' shape."""
    if not isinstance(refs, list):
        raise UserError(f"{refs_path}: a refs file must hold a list of refs, got {_type_name(refs)}")
    splits: dict[str, None] = {}  # insertion-ordered set for the message
    chosen: dict[int, int] = {}
    for index, ref in enumerate(refs):
        where = f"{refs_path}: ref {index}"
        if not isinstance(ref, dict):
            raise UserError(f"{where} must be a dict, got {_type_name(ref)}")
        for key in ("split", "ann_id", "sentences"):
            if key not in ref:
                raise UserError(f"{where} has no key {key!r}")
        if not isinstance(ref["split"], str):
            raise UserError(f"{where}: 'split' must be a string, got {ref['split']!r}")
        splits[ref["split"]] = None
        if ref["split"] != split:
            continue
        if not _is_int(ref["ann_id"]):
            raise UserError(f"{where}: 'ann_id' must be an integer, got {ref['ann_id']!r}")
        if not isinstance(ref["sentences"], list):
            raise UserError(f"{where}: 'sentences' must be a list, got {_type_name(ref['sentences'])}")
        for k, sentence in enumerate(ref["sentences"]):
            if not isinstance(sentence, dict) or not _is_int(sentence.get("sent_id")):
                raise UserError(f"{where}: sentences[{k}] must be a dict with an integer 'sent_id'")
            sent_id = sentence["sent_id"]
            if sent_id in chosen:
                raise UserError(f"{refs_path}: sent_id {sent_id} appears in more than one sentence "
                                f"of split {split!r} (again in ref {index})")
            chosen[sent_id] = ref["ann_id"]
    if split not in splits:
        raise UserError(f"{refs_path}: no refs in split {split!r}; splits present: "
                        f"{', '.join(splits) or 'none'}")
    if not chosen:
        raise UserError(f"{refs_path}: split {split!r} has no sentences — there is nothing to evaluate")
    return chosen


def _gt_boxes(instances: Any, ann_ids: set[int], instances_path: str | os.PathLike) -> dict[int, list[float]]:
    if not isinstance(instances, dict) or not isinstance(instances.get("annotations"), list):
        raise UserError(f"{instances_path}: an instances file must be a JSON object with an "
                        "'annotations' list")
    boxes: dict[int, list[float]] = {}
    for index, ann in enumerate(instances["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise UserError(f"{instances_path}: annotation {index} must be an object with key 'id'")
        ann_id = ann["id"]
        if ann_id not in ann_ids:
            continue
        if ann_id in boxes:
            # refer.py keeps the last, mmnas' ref_process.py the first; refuse to guess.
            raise UserError(f"{instances_path}: annotation id {ann_id} appears more than once")
        if "bbox" not in ann:
            raise UserError(f"{instances_path}: annotation id {ann_id} has no key 'bbox'")
        boxes[ann_id] = _check_xywh(ann["bbox"], f"{instances_path}: annotation id {ann_id}")
    absent = ann_ids - boxes.keys()
    if absent:
        raise UserError(f"{instances_path}: {len(absent)} ann_id(s) of the refs have no annotation "
                        f"here (e.g. {_examples(absent)}) — refs and instances must be the same dataset")
    return boxes


def _predicted_boxes(predictions: Any, sent_ids: Mapping[int, int], split: str,
                     predictions_path: str | os.PathLike,
                     refs_path: str | os.PathLike) -> dict[int, list[float]]:
    if not isinstance(predictions, list):
        raise UserError(f'{predictions_path}: must be a JSON list of {{"sent_id": int, "bbox": '
                        f"[x, y, w, h]}} objects, got a JSON {_type_name(predictions)}")
    boxes: dict[int, list[float]] = {}
    for index, entry in enumerate(predictions):
        where = f"{predictions_path}: entry {index}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be an object, got {_type_name(entry)}")
        for key in ("sent_id", "bbox"):
            if key not in entry:
                raise UserError(f"{where} has no key {key!r}")
        sent_id = entry["sent_id"]
        if not _is_int(sent_id):
            raise UserError(f"{where}: 'sent_id' must be an integer, got {_type_name(sent_id)} {sent_id!r}")
        if sent_id in boxes:
            raise UserError(f"{predictions_path}: sent_id {sent_id} has more than one prediction "
                            f"(again at entry {index}) — give exactly one box per expression")
        boxes[sent_id] = _check_xywh(entry["bbox"], f"{where} (sent_id {sent_id})")
    missing = sent_ids.keys() - boxes.keys()
    if missing:
        raise UserError(f"{predictions_path}: {_ids_phrase(len(missing))} of split {split!r} in "
                        f"{refs_path} missing from the predictions (e.g. {_examples(missing)}) — "
                        "give one box per expression")
    extra = boxes.keys() - sent_ids.keys()
    if extra:
        raise UserError(f"{predictions_path}: {_ids_phrase(len(extra))} not in split {split!r} of "
                        f"{refs_path} (e.g. {_examples(extra)}) — predictions must come from the "
                        "evaluated split")
    return boxes


def evaluate_vgd_files(predictions_path: str | os.PathLike, refs_path: str | os.PathLike,
                       instances_path: str | os.PathLike, split: str,
                       convention: str = "mmnas") -> VgdScores:
    """Acc@0.5 of a predictions file on one split of a refer-style dataset.

    Args:
        predictions_path: JSON list of ``{"sent_id": int, "bbox": [x, y, w, h]}``
            (see the module docstring), one per sentence of ``split``.
        refs_path: the dataset's ``refs(<splitBy>).p`` (loaded without running
            any code, see ``nas.safe_pickle``).
        instances_path: the dataset's ``instances.json``; GT boxes are its
            annotations' ``bbox`` for each ref's ``ann_id``.
        split: e.g. ``"val"``, ``"testA"``, ``"testB"`` (unc) or ``"test"`` (umd).
        convention: ``"mmnas"`` (+1 areas, IoU >= 0.5) or ``"simrec"``
            (continuous areas, IoU > 0.5).
    """
    _check_convention(convention)
    refs = load_plain_pickle(refs_path, "a RefCOCO refs file")
    sent_to_ann = _split_expressions(refs, split, refs_path)
    gt = _gt_boxes(read_json(instances_path, "instances file"), set(sent_to_ann.values()), instances_path)
    predicted = _predicted_boxes(read_json(predictions_path, "predictions file"), sent_to_ann, split,
                                 predictions_path, refs_path)
    order: Sequence[int] = sorted(sent_to_ann)
    pred_xyxy = xywh_to_xyxy(np.array([predicted[s] for s in order], dtype=np.float64))
    gt_xyxy = xywh_to_xyxy(np.array([gt[sent_to_ann[s]] for s in order], dtype=np.float64))
    hits = _hits(pred_xyxy, gt_xyxy, convention)
    num_hits = int(hits.sum())
    return VgdScores(accuracy=num_hits / float(len(order)) * 100.0, num_expressions=len(order),
                     convention=convention, num_hits=num_hits, split=split)
