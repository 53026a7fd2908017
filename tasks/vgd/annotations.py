"""Referring-expression annotations as released: refer's ``refs(<by>).p`` + ``instances.json``, or SimREC's json.

Both become one list of :class:`Expression` per split. The refs files are Python
pickles, so they are read with :func:`nas.safe_pickle.load_plain_pickle`, which
builds only plain containers and runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.errors import UserError
from nas.io import read_json
from nas.safe_pickle import load_plain_pickle

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
    boxes = {a["id"]: a["bbox"] for a in instances["annotations"] if isinstance(a, dict) and "id" in a}
    splits: dict[str, list[Expression]] = {}
    for number, ref in enumerate(refs):
        try:
            box = boxes[ref["ann_id"]]
            for sentence in ref["sentences"]:
                splits.setdefault(ref["split"], []).append(
                    Expression(int(sentence["sent_id"]), str(sentence["sent"]), int(ref["image_id"]),
                               tuple(float(v) for v in box)))
        except KeyError as error:
            raise UserError(f"{refs_path}: ref {number} has no {error} (or its ann_id is not in "
                            f"{instances_path.name})") from None
        except (TypeError, ValueError):
            raise UserError(f"{refs_path}: ref {number} has a malformed field") from None
    return splits


def read_simrec(root: Path, dataset: str) -> dict[str, list[Expression]]:
    path = root / "anns" / f"{dataset}.json"
    data = read_json(path, "SimREC annotation file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object keyed by split")
    splits: dict[str, list[Expression]] = {}
    position = 0  # ids must be unique across splits: several splits are loaded together
    for split, entries in data.items():
        expressions = splits.setdefault(split, [])
        for number, entry in enumerate(entries):
            try:
                for text in entry["refs"]:
                    expressions.append(Expression(position, str(text), int(entry["iid"]),
                                                  tuple(float(v) for v in entry["bbox"])))
                    position += 1
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{path}: {split}[{number}] needs iid, bbox [x, y, w, h] and refs") from None
    return splits
