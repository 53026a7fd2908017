"""The ``clevr_ref`` results file and its scoring by ``nas evaluate``.

A JSON list with one entry per expression of the split::

    {"refexp_index": 0, "image_index": 0, "mask_rle": "1234,56,...", "box": [x, y, w, h]}

``refexp_index`` is the expression's position in the refexps file, ``mask_rle`` the predicted
mask in CLEVR-Ref+'s run-length form over the 320 x 480 image and ``box`` the predicted box in
pixels. It is written atomically and refused when any expression is missing or repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import UserError, described
from nas.io import atomic_write_json, read_json
from nas.rle import decode_rle
from nas.task import check_complete
from tasks.clevr_ref.metric import ClevrRefScores, clevr_ref_scores, score_mask
from tasks.clevr_ref.refexps import Refexp, read_refexps
from tasks.clevr_ref.scenes import MASK_HEIGHT, MASK_WIDTH, ClevrScene, read_scenes

__all__ = ["decode_prediction", "evaluate_results_files", "read_results", "score_predictions", "write_results"]


def write_results(path: Path, predictions: list[dict[str, Any]], expected: list[int]) -> Path:
    """The results file, entries in the order of ``expected`` refexp indices, each exactly once."""
    check_complete(path, [p["refexp_index"] for p in predictions], expected, "refexp_index")
    by_index = {p["refexp_index"]: p for p in predictions}
    entries = [{k: by_index[i][k] for k in ("refexp_index", "image_index", "mask_rle", "box")} for i in expected]
    return atomic_write_json(path, entries, indent=None)


def read_results(path: str | Path) -> dict[int, dict[str, Any]]:
    """Entries of a results file by refexp index, each checked for its four keys."""
    path = Path(path)
    data = read_json(path, "results file")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of {{refexp_index, image_index, mask_rle, box}}, "
                        f"got {described(data)}")
    out: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(data):
        where = f"{path}: entry {position}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected an object, got {described(entry)}")
        index = entry.get("refexp_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise UserError(f"{where}: refexp_index should be an integer, got {described(index)}")
        if index in out:
            raise UserError(f"{where}: refexp_index {index} appears twice")
        if not isinstance(entry.get("mask_rle"), str):
            raise UserError(f"{where}: mask_rle should be a run-length string, got {described(entry.get('mask_rle'))}")
        box = entry.get("box")
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float))
                                                                 and not isinstance(v, bool) for v in box):
            raise UserError(f"{where}: box should be [x, y, w, h] numbers, got {described(box)}")
        out[index] = entry
    return out


def decode_prediction(entry: dict[str, Any], where: str):
    try:
        return decode_rle(entry["mask_rle"], MASK_HEIGHT, MASK_WIDTH)
    except ValueError as error:
        raise UserError(f"{where}: refexp_index {entry['refexp_index']}: mask_rle: {error}") from None


def score_predictions(refexps: list[Refexp], scenes: list[ClevrScene], predictions: dict[int, dict[str, Any]],
                      where: str, family_names: dict[int, str] | None = None) -> ClevrRefScores:
    """Scores of ``predictions`` (by refexp index) on ``refexps``; every expression needs one."""
    missing = [r.index for r in refexps if r.index not in predictions]
    if missing:
        raise UserError(f"{where}: no prediction for {len(missing)} of {len(refexps)} expressions "
                        f"(e.g. refexp_index {missing[0]})")
    scores = [score_mask(decode_prediction(predictions[r.index], where), scenes[r.image_index].union(list(r.output)),
                         [float(v) for v in predictions[r.index]["box"]]) for r in refexps]
    names = [(family_names or {}).get(r.family, f"family {r.family}") for r in refexps] if family_names else None
    return clevr_ref_scores(scores, names)


def evaluate_results_files(refexps_file: str | Path, scenes_file: str | Path,
                           results_file: str | Path) -> ClevrRefScores:
    """``nas evaluate --task clevr_ref``: a results file against the scenes' masks and the programs' outputs."""
    scenes = read_scenes(scenes_file)
    refexps = read_refexps(refexps_file, [len(s.objects) for s in scenes])
    predictions = read_results(results_file)
    known = {r.index for r in refexps}
    extra = sorted(set(predictions) - known)
    if extra:
        raise UserError(f"{results_file}: refexp_index {extra[0]} is not an expression of {refexps_file} "
                        f"({len(refexps)} expressions)")
    return score_predictions(refexps, scenes, predictions, str(results_file))
