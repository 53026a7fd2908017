"""Referring-expression annotations as released: refer's ``refs(<by>).p`` + ``instances.json``, or SimREC's json.

Both become one list of :class:`Expression` per split. The refs files are Python
pickles, so they are read with :func:`nas.safe_pickle.load_plain_pickle`, which
builds only plain containers and runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.errors import UserError, described, json_type, shown
from nas.io import read_json
from nas.safe_pickle import load_plain_pickle
from tasks.vgd.metric import _check_xywh, _is_int

__all__ = ["Expression", "read_refer", "read_simrec"]


@dataclass(frozen=True)
class Expression:
    sent_id: int  # refer's sent_id; SimREC files have none: the sentence's position in the file, over all splits
    text: str
    image_id: int
    box_xywh: tuple[float, float, float, float]  # ground truth, COCO pixels


def read_refer(root: Path, dataset: str, split_by: str) -> dict[str, list[Expression]]:
    refs_path = root / dataset / f"refs({split_by}).p"
    instances_path = root / dataset / "instances.json"
    refs = load_plain_pickle(refs_path, "a refs file")
    instances = read_json(instances_path, "instances file")
    if not isinstance(refs, list):
        raise UserError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    if not isinstance(instances, dict) or not isinstance(instances.get("annotations"), list):
        raise UserError(f"{instances_path}: expected a COCO instances object with an 'annotations' list")
    for number, ref in enumerate(refs):
        _check_ref(ref, f"{refs_path}: ref {number}")
    boxes = _referenced_boxes(instances["annotations"], {ref["ann_id"] for ref in refs}, instances_path)
    splits: dict[str, list[Expression]] = {}
    for number, ref in enumerate(refs):
        if ref["ann_id"] not in boxes:
            raise UserError(f"{refs_path}: ref {number} has ann_id {ref['ann_id']}, which {instances_path.name} "
                            "does not have (refs and instances must come from the same dataset)")
        for sentence in ref["sentences"]:
            splits.setdefault(ref["split"], []).append(
                Expression(sentence["sent_id"], sentence["sent"], ref["image_id"], boxes[ref["ann_id"]]))
    _check_unique_sent_ids(splits, refs_path)
    return splits


def _check_ref(ref: object, where: str) -> None:
    """One ref of refer's pickle: the keys and types the loader reads."""
    if not isinstance(ref, dict):
        raise UserError(f"{where} must be a dict, got {described(ref)}")
    for key, ok, expected in (("split", isinstance(ref.get("split"), str), "a string"),
                              ("ann_id", _is_int(ref.get("ann_id")), "an integer"),
                              ("image_id", _is_int(ref.get("image_id")), "an integer"),
                              ("sentences", isinstance(ref.get("sentences"), list), "a list")):
        if key not in ref:
            raise UserError(f"{where} has no key '{key}'")
        if not ok:
            raise UserError(f"{where}: '{key}' must be {expected}, got {described(ref[key])}")
    for k, sentence in enumerate(ref["sentences"]):
        if not isinstance(sentence, dict):
            raise UserError(f"{where}: sentences[{k}] must be a dict with 'sent_id' and 'sent', "
                            f"got {described(sentence)}")
        for key, ok, expected in (("sent_id", _is_int(sentence.get("sent_id")), "an integer"),
                                  ("sent", isinstance(sentence.get("sent"), str), "a string")):
            if not ok:
                found = described(sentence[key]) if key in sentence else "nothing"
                raise UserError(f"{where}: sentences[{k}]['{key}'] must be {expected}, got {found}")


def _referenced_boxes(annotations: list, ann_ids: set[int], path: Path) -> dict[int, tuple[float, ...]]:
    """ann_id -> [x, y, w, h] of the COCO annotations that a ref points at."""
    boxes: dict[int, tuple[float, ...]] = {}
    for number, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "id" not in annotation:
            raise UserError(f"{path}: annotations[{number}] must be an object with key 'id', got {shown(annotation)}")
        ann_id = annotation["id"]
        if not _is_int(ann_id) or ann_id not in ann_ids:
            continue
        if ann_id in boxes:  # refer.py keeps the last, MmNas's ref_process.py the first: refuse to guess
            raise UserError(f"{path}: annotation id {ann_id} appears more than once")
        if "bbox" not in annotation:
            raise UserError(f"{path}: annotation id {ann_id} has no key 'bbox'")
        boxes[ann_id] = tuple(_check_xywh(annotation["bbox"], f"{path}: annotation id {ann_id}"))
    return boxes


def _check_unique_sent_ids(splits: dict[str, list[Expression]], path: Path) -> None:
    # Predictions and results files are keyed by sent_id, so two sentences with one id cannot both be scored.
    seen: dict[int, str] = {}
    for split, expressions in splits.items():
        for expression in expressions:
            if expression.sent_id in seen:
                raise UserError(f"{path}: sent_id {expression.sent_id} appears more than once (split "
                                f"{seen[expression.sent_id]!r}, again in {split!r})")
            seen[expression.sent_id] = split


def read_simrec(root: Path, dataset: str) -> dict[str, list[Expression]]:
    path = root / "anns" / f"{dataset}.json"
    data = read_json(path, "SimREC annotation file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object keyed by split, got {json_type(data)}")
    splits: dict[str, list[Expression]] = {}
    position = 0  # ids must be unique across splits: several splits are loaded together
    for split, entries in data.items():
        if not isinstance(entries, list):
            raise UserError(f"{path}: split '{split}' must be a list of entries, got {described(entries)}")
        expressions = splits.setdefault(split, [])
        for number, entry in enumerate(entries):
            where = f"{path}: {split}[{number}]"
            if not isinstance(entry, dict):
                raise UserError(f"{where} must be an object with iid, bbox and refs, got {described(entry)}")
            for key in ("iid", "bbox", "refs"):
                if key not in entry:
                    raise UserError(f"{where} has no key '{key}'")
            if not _is_int(entry["iid"]):
                raise UserError(f"{where}: 'iid' must be an integer, got {described(entry['iid'])}")
            box = tuple(_check_xywh(entry["bbox"], where))
            if not isinstance(entry["refs"], list) or not all(isinstance(text, str) for text in entry["refs"]):
                raise UserError(f"{where}: 'refs' must be a list of strings, got {described(entry['refs'])}")
            for text in entry["refs"]:
                expressions.append(Expression(position, text, entry["iid"], box))
                position += 1
    return splits
