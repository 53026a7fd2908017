"""Tests for tasks.vgd.metric: Acc@0.5 under the MmNas and SimREC conventions.

Rules checked against MILVLG/mmnas@552e29e666 (``mmnas/utils/bbox.pyx``
``bbox_overlaps``, ``train_vgd.py`` ``overlaps >= 0.5``) and
luogen1996/SimREC@e8136cceab (``simrec/models/utils/box_op.py``
``batch_box_iou``, ``tools/eval_engine.py`` ``iou > 0.5``). Every expected
IoU below is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from tasks.vgd.metric import (
    CONVENTIONS,
    VgdScores,
    accuracy_at_05,
    box_iou,
    evaluate_vgd_files,
    xywh_to_xyxy,
)


def _iou(a: list[float], b: list[float], convention: str) -> float:
    return float(box_iou(np.array([a]), np.array([b]), convention)[0])


# --------------------------------------------------------------------------
# IoU and the threshold
# --------------------------------------------------------------------------

def test_exactly_half_under_simrec_is_a_miss_there_and_a_hit_for_mmnas() -> None:
    a, b = [0, 0, 10, 10], [0, 0, 10, 5]
    # simrec: inter 10*5 = 50, union 100 + 50 - 50 = 100 -> exactly 0.5, and 0.5 > 0.5 is false.
    assert _iou(a, b, "simrec") == 0.5
    assert accuracy_at_05([a], [b], "simrec") == 0.0
    # mmnas: +1 sides 11x11 = 121 and 11x6 = 66, inter 66 -> 66/121 = 6/11.
    assert _iou(a, b, "mmnas") == pytest.approx(6 / 11)
    assert accuracy_at_05([a], [b], "mmnas") == 100.0


def test_exactly_half_under_mmnas_is_a_hit_because_of_greater_or_equal() -> None:
    a, b = [0, 0, 9, 9], [0, 0, 9, 4]
    # mmnas: 10x10 = 100 and 10x5 = 50, inter 50, union 100 -> exactly 0.5, and 0.5 >= 0.5.
    assert _iou(a, b, "mmnas") == 0.5
    assert accuracy_at_05([a], [b], "mmnas") == 100.0
    # simrec: 9x9 = 81 and 9x4 = 36, inter 36, union 81 -> 4/9: the +1 areas flip the decision.
    assert _iou(a, b, "simrec") == pytest.approx(4 / 9)
    assert accuracy_at_05([a], [b], "simrec") == 0.0


def test_plus_one_areas_flip_a_clear_miss_into_a_hit() -> None:
    a, b = [0, 0, 4, 4], [0, 0, 4, 2]
    # simrec: 4x2 = 8 of 4x4 = 16 -> 0.5 (miss, strict). mmnas: 5x3 = 15 of 5x5 = 25 -> 0.6 (hit).
    assert _iou(a, b, "simrec") == 0.5
    assert _iou(a, b, "mmnas") == pytest.approx(0.6)
    assert accuracy_at_05([a], [b], "simrec") == 0.0
    assert accuracy_at_05([a], [b], "mmnas") == 100.0


@pytest.mark.parametrize("a, b, mmnas, simrec", [
    # Partial overlap. simrec: inter 2x1 = 2, union 8 + 8 - 2 = 14 -> 1/7.
    # mmnas: areas 5x3 = 15 each, inter (4-2+1) x (2-1+1) = 6, union 24 -> 1/4.
    ([0, 0, 4, 2], [2, 1, 6, 3], 1 / 4, 1 / 7),
    # Touching at x = 1: no area under simrec; mmnas counts the shared pixel
    # column: inter 1x2 = 2, areas 2x2 = 4 each, union 6 -> 1/3.
    ([0, 0, 1, 1], [1, 0, 2, 1], 1 / 3, 0.0),
    # Disjoint: 0 under both.
    ([0, 0, 1, 1], [3, 3, 4, 4], 0.0, 0.0),
    # Identical boxes: 1 under both.
    ([5, 6, 25, 30], [5, 6, 25, 30], 1.0, 1.0),
    # A point box: mmnas sees one pixel (IoU 1); simrec has union 0, which we score 0.
    ([1, 1, 1, 1], [1, 1, 1, 1], 1.0, 0.0),
    # Containment with fractions. simrec: 2.5x1.5 = 3.75 of 5x3 = 15 -> 0.25.
    # mmnas: 3.5x2.5 = 8.75 of 6x4 = 24 -> 8.75/24.
    ([0, 0, 5, 3], [1, 1, 3.5, 2.5], 8.75 / 24, 0.25),
])
def test_iou_of_specific_boxes(a: list[float], b: list[float], mmnas: float, simrec: float) -> None:
    assert _iou(a, b, "mmnas") == pytest.approx(mmnas, abs=1e-15)
    assert _iou(a, b, "simrec") == pytest.approx(simrec, abs=1e-15)
    # IoU is symmetric.
    assert _iou(b, a, "mmnas") == pytest.approx(mmnas, abs=1e-15)


def test_box_iou_pairs_rows_and_accuracy_is_a_percentage() -> None:
    pred = np.array([[0, 0, 9, 9], [0, 0, 10, 10], [0, 0, 1, 1], [5, 6, 25, 30]], dtype=float)
    gt = np.array([[0, 0, 9, 4], [0, 0, 10, 5], [3, 3, 4, 4], [5, 6, 25, 30]], dtype=float)
    np.testing.assert_allclose(box_iou(pred, gt, "mmnas"), [0.5, 6 / 11, 0.0, 1.0])
    np.testing.assert_allclose(box_iou(pred, gt, "simrec"), [4 / 9, 0.5, 0.0, 1.0])
    # mmnas hits rows 0, 1, 3; simrec only row 3.
    assert accuracy_at_05(pred, gt) == 75.0  # mmnas is the default
    assert accuracy_at_05(pred, gt, "simrec") == 25.0


def test_xywh_to_xyxy_adds_width_and_height_without_minus_one() -> None:
    np.testing.assert_array_equal(xywh_to_xyxy([10, 20, 30, 40]), [10, 20, 40, 60])
    np.testing.assert_allclose(xywh_to_xyxy([[103.93, 299.99, 134.22, 177.42], [0, 0, 0, 0]]),
                               [[103.93, 299.99, 238.15, 477.41], [0, 0, 0, 0]])
    with pytest.raises(UserError, match=r"shape \(4,\) or \(N, 4\), got \(3,\)"):
        xywh_to_xyxy([1, 2, 3])


def test_array_errors() -> None:
    with pytest.raises(UserError, match=r"unknown box convention 'detectron'; valid conventions: "
                                        r"mmnas, simrec"):
        box_iou(np.zeros((1, 4)), np.zeros((1, 4)), "detectron")
    with pytest.raises(UserError, match=r"a has 2 boxes and b has 1"):
        box_iou(np.zeros((2, 4)), np.zeros((1, 4)), "mmnas")
    with pytest.raises(UserError, match=r"\(N, 4\) array, got shape \(2, 3\)"):
        accuracy_at_05(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(UserError, match=r"no boxes to evaluate"):
        accuracy_at_05(np.zeros((0, 4)), np.zeros((0, 4)))
    assert CONVENTIONS == ("mmnas", "simrec")


# --------------------------------------------------------------------------
# Files: refs(unc).p + instances.json + our predictions
# --------------------------------------------------------------------------

# Split val: ref 10 (ann 1001, GT xywh [0, 0, 9, 9]) with sentences 100 and 101,
# ref 11 (ann 1002, GT [20, 20, 10, 10]) with sentence 102. Train and testA exist too.
REFS = [
    {"ref_id": 9, "ann_id": 1000, "image_id": 1, "category_id": 1, "split": "train", "sent_ids": [90],
     "sentences": [{"sent_id": 90, "tokens": ["man"], "raw": "man", "sent": "man"}]},
    {"ref_id": 10, "ann_id": 1001, "image_id": 1, "category_id": 1, "split": "val", "sent_ids": [100, 101],
     "sentences": [{"sent_id": 100, "tokens": ["left"], "raw": "left", "sent": "left"},
                   {"sent_id": 101, "tokens": ["left", "one"], "raw": "left one", "sent": "left one"}]},
    {"ref_id": 11, "ann_id": 1002, "image_id": 2, "category_id": 1, "split": "val", "sent_ids": [102],
     "sentences": [{"sent_id": 102, "tokens": ["dog"], "raw": "dog", "sent": "dog"}]},
    {"ref_id": 12, "ann_id": 1003, "image_id": 3, "category_id": 1, "split": "testA", "sent_ids": [120],
     "sentences": [{"sent_id": 120, "tokens": ["cat"], "raw": "cat", "sent": "cat"}]},
]
INSTANCES = {
    "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": 480, "width": 640}
               for i in (1, 2, 3)],
    "annotations": [
        {"id": 1000, "image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0},
        {"id": 1001, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "area": 81.0, "iscrowd": 0},
        {"id": 1002, "image_id": 2, "category_id": 1, "bbox": [20.0, 20.0, 10.0, 10.0], "area": 100.0,
         "iscrowd": 0},
        {"id": 1003, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
}
# 100: exact GT -> hit under both. 101: [0, 0, 9, 4] -> xyxy [0, 0, 9, 4] vs [0, 0, 9, 9]:
# 0.5 under mmnas (hit), 4/9 under simrec (miss). 102: disjoint -> miss under both.
PREDICTIONS = [
    {"sent_id": 102, "bbox": [100, 100, 10, 10]},
    {"sent_id": 100, "bbox": [0, 0, 9, 9], "score": 0.9},  # extra keys are ignored
    {"sent_id": 101, "bbox": [0.0, 0.0, 9.0, 4.0]},
]


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps(REFS, protocol=2))
    instances_path = tmp_path / "instances.json"
    instances_path.write_text(json.dumps(INSTANCES))
    return refs_path, instances_path


def _predictions(tmp_path: Path, data: object, name: str = "predictions.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_file_round_trip_under_both_conventions(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    refs_path, instances_path = dataset
    predictions = _predictions(tmp_path, PREDICTIONS)
    mmnas = evaluate_vgd_files(predictions, refs_path, instances_path, "val")
    assert mmnas == VgdScores(accuracy=2 / 3 * 100.0, num_expressions=3, convention="mmnas",
                              num_hits=2, split="val")
    simrec = evaluate_vgd_files(predictions, refs_path, instances_path, "val", convention="simrec")
    assert (simrec.accuracy, simrec.num_hits) == (1 / 3 * 100.0, 1)
    assert json.loads(json.dumps(mmnas.to_dict())) == {
        "accuracy": 2 / 3 * 100.0, "num_expressions": 3, "num_hits": 2, "convention": "mmnas",
        "split": "val"}


def test_other_split_only_needs_its_own_sentences(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    refs_path, instances_path = dataset
    predictions = _predictions(tmp_path, [{"sent_id": 120, "bbox": [0, 0, 4, 4]}])
    assert evaluate_vgd_files(predictions, refs_path, instances_path, "testA").accuracy == 100.0


def test_python2_refs_pickle_is_read(tmp_path: Path) -> None:
    # A Python-2 cPickle protocol-2 refs list (byte strings as SHORT_BINSTRING):
    # [{'split': 'val', 'ann_id': 7, 'sentences': [{'sent_id': 3}]}]
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x03valq\x03U\x06ann_idq\x04K\x07"
                          b"U\tsentencesq\x05]q\x06}q\x07U\x07sent_idq\x08K\x03saua.")
    instances_path = tmp_path / "instances.json"
    instances_path.write_text(json.dumps({"annotations": [{"id": 7, "bbox": [0, 0, 10, 10]}]}))
    predictions = _predictions(tmp_path, [{"sent_id": 3, "bbox": [0, 0, 10, 5]}])
    # [0,0,10,10] vs [0,0,10,5]: simrec exactly 0.5 (miss), mmnas 6/11 (hit).
    assert evaluate_vgd_files(predictions, refs_path, instances_path, "val").accuracy == 100.0
    assert evaluate_vgd_files(predictions, refs_path, instances_path, "val", "simrec").accuracy == 0.0


# --------------------------------------------------------------------------
# File errors: one line, naming the file
# --------------------------------------------------------------------------

def _error(predictions: Path, refs_path: Path, instances_path: Path, split: str = "val",
           convention: str = "mmnas") -> str:
    with pytest.raises(UserError) as caught:
        evaluate_vgd_files(predictions, refs_path, instances_path, split, convention)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("predictions, expected", [
    (PREDICTIONS[:2], "1 sent_id of split 'val' in {refs} missing from the predictions (e.g. 101)"),
    (PREDICTIONS + [{"sent_id": 120, "bbox": [0, 0, 1, 1]}, {"sent_id": 90, "bbox": [0, 0, 1, 1]}],
     "2 sent_ids not in split 'val' of {refs} (e.g. 90, 120)"),
    (PREDICTIONS + [{"sent_id": 100, "bbox": [0, 0, 1, 1]}], "sent_id 100 has more than one prediction "
                                                             "(again at entry 3)"),
    ([{"sent_id": 100, "bbox": [0, 0, 9]}], "entry 0 (sent_id 100): 'bbox' must be a list of 4 numbers"),
    ([{"sent_id": 100, "bbox": "0 0 9 9"}], "entry 0 (sent_id 100): 'bbox' must be a list of 4 numbers"),
    ([{"sent_id": 100, "bbox": [0, 0, True, 9]}], "'bbox' must be a list of 4 numbers"),
    ([{"sent_id": 100, "bbox": [0, 0, 9, 9, 1]}], "'bbox' must be a list of 4 numbers"),
    ([{"sent_id": 100, "bbox": [0, 0, -1, 9]}], "needs w >= 0 and h >= 0, got [0, 0, -1, 9]"),
    ([{"sent_id": "100", "bbox": [0, 0, 9, 9]}], "entry 0: 'sent_id' must be an integer, got string '100'"),
    ([{"sent_id": True, "bbox": [0, 0, 9, 9]}], "'sent_id' must be an integer, got boolean True"),
    ([{"bbox": [0, 0, 9, 9]}], "entry 0 has no key 'sent_id'"),
    ([{"sent_id": 100}], "entry 0 has no key 'bbox'"),
    ([[100, [0, 0, 9, 9]]], "entry 0 must be an object, got list"),
    ({"100": [0, 0, 9, 9]}, 'must be a JSON list of {"sent_id": int, "bbox": [x, y, w, h]} objects, '
                            "got a JSON object"),
])
def test_prediction_errors(tmp_path: Path, dataset: tuple[Path, Path], predictions: object,
                           expected: str) -> None:
    refs_path, instances_path = dataset
    path = _predictions(tmp_path, predictions)
    message = _error(path, refs_path, instances_path)
    assert message.startswith(f"{path}: ")
    assert expected.replace("{refs}", str(refs_path)) in message


def test_non_finite_bbox(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    # Python's json reads the non-standard NaN literal; it must not score as a miss silently.
    path = _predictions(tmp_path, '[{"sent_id": 100, "bbox": [0, 0, NaN, 9]}]')
    assert "'bbox' has a non-finite value" in _error(path, *dataset)
    path = _predictions(tmp_path, '[{"sent_id": 100, "bbox": [0, 0, 1e999, 9]}]')
    assert "'bbox' has a non-finite value" in _error(path, *dataset)


def test_unknown_convention_and_split(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    refs_path, instances_path = dataset
    path = _predictions(tmp_path, PREDICTIONS)
    assert _error(path, refs_path, instances_path, convention="MMNAS") == (
        "unknown box convention 'MMNAS'; valid conventions: mmnas, simrec")
    assert _error(path, refs_path, instances_path, split="testB") == (
        f"{refs_path}: no refs in split 'testB'; splits present: train, val, testA")


def test_unreadable_prediction_file(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    missing = tmp_path / "nope.json"
    assert _error(missing, *dataset).startswith(f"{missing}: ")
    broken = _predictions(tmp_path, "[{", name="broken.json")
    assert _error(broken, *dataset).startswith(f"{broken}: not valid JSON")


@pytest.mark.parametrize("refs, expected", [
    ({"refs": []}, "a refs file must hold a list of refs, got object"),
    ([{"split": "val", "ann_id": 1001}], "ref 0 has no key 'sentences'"),
    ([{"split": "val", "ann_id": "1001", "sentences": []}], "ref 0: 'ann_id' must be an integer"),
    ([{"split": "val", "ann_id": 1001, "sentences": [{"sent": "x"}]}],
     "ref 0: sentences[0] must be a dict with an integer 'sent_id'"),
    ([{"split": "val", "ann_id": 1001, "sentences": [{"sent_id": 1}]},
      {"split": "val", "ann_id": 1002, "sentences": [{"sent_id": 1}]}],
     "sent_id 1 appears in more than one sentence of split 'val' (again in ref 1)"),
    ([{"split": "val", "ann_id": 1001, "sentences": []}], "split 'val' has no sentences"),
])
def test_refs_errors(tmp_path: Path, dataset: tuple[Path, Path], refs: object, expected: str) -> None:
    refs_path, instances_path = dataset
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    message = _error(_predictions(tmp_path, PREDICTIONS), refs_path, instances_path)
    assert message.startswith(f"{refs_path}: ")
    assert expected in message


def test_hostile_refs_file_runs_nothing(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    refs_path, instances_path = dataset
    marker = tmp_path / "MARKER"
    # protocol 0: "os.system('touch MARKER')" via the GLOBAL and REDUCE opcodes.
    refs_path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    message = _error(_predictions(tmp_path, PREDICTIONS), refs_path, instances_path)
    assert message.startswith(f"{refs_path}: refused to unpickle os.system")
    assert not marker.exists()
    missing = tmp_path / "refs(google).p"
    assert _error(_predictions(tmp_path, PREDICTIONS), missing, instances_path) == (
        f"{missing}: a RefCOCO refs file not found")


@pytest.mark.parametrize("annotations, expected", [
    ([a for a in INSTANCES["annotations"] if a["id"] != 1002],
     "1 ann_id(s) of the refs have no annotation here (e.g. 1002)"),
    (INSTANCES["annotations"] + [{"id": 1001, "bbox": [0, 0, 1, 1]}], "annotation id 1001 appears more than once"),
    ([{"id": 1001, "bbox": [0, 0, 9]}, {"id": 1002, "bbox": [0, 0, 1, 1]}],
     "annotation id 1001: 'bbox' must be a list of 4 numbers"),
    ([{"id": 1001}, {"id": 1002, "bbox": [0, 0, 1, 1]}], "annotation id 1001 has no key 'bbox'"),
    ([{"bbox": [0, 0, 1, 1]}], "annotation 0 must be an object with key 'id'"),
])
def test_instances_errors(tmp_path: Path, dataset: tuple[Path, Path], annotations: list,
                          expected: str) -> None:
    refs_path, instances_path = dataset
    instances_path.write_text(json.dumps({"annotations": annotations}))
    message = _error(_predictions(tmp_path, PREDICTIONS), refs_path, instances_path)
    assert message.startswith(f"{instances_path}: ")
    assert expected in message
    instances_path.write_text(json.dumps([]))
    assert "must be a JSON object with an 'annotations' list" in _error(
        _predictions(tmp_path, PREDICTIONS), refs_path, instances_path)
