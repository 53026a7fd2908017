"""CLEVR-Ref+ readers refuse malformed files in one line; the metric is IEP-Ref's cumulative IoU."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nas.errors import UserError
from nas.rle import encode_rle
from tasks.clevr_ref.features import cell_boxes, read_grid_features
from tasks.clevr_ref.iep_files import read_iep_refexps, read_iep_vocab
from tasks.clevr_ref.metric import clevr_ref_scores, score_mask
from tasks.clevr_ref.refexps import read_refexps
from tasks.clevr_ref.results import evaluate_results_files, write_results
from tasks.clevr_ref.scenes import read_scenes


def _rect(top: int, left: int, height: int, width: int, shape: tuple[int, int] = (320, 480)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + height, left:left + width] = True
    return mask


def _scene(index: int = 0) -> dict:
    return {"image_index": index, "objects": [{"color": "red", "shape": "cube", "material": "metal", "size": "large"},
                                              {"color": "blue", "shape": "sphere", "material": "rubber",
                                               "size": "small"}],
            "relationships": {"left": [[1], []], "right": [[], [0]], "front": [[], []], "behind": [[], []]},
            "obj_mask": {"1": encode_rle(_rect(0, 0, 10, 10)), "2": encode_rle(_rect(100, 200, 20, 40))}}


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_cumulative_iou_sums_before_dividing_unlike_the_mean() -> None:
    first = score_mask(_rect(0, 5, 1, 10), _rect(0, 0, 1, 10))  # I = 5, U = 15, boxes IoU 1/3: a miss
    second = score_mask(_rect(11, 0, 10, 10), _rect(10, 0, 10, 10))  # I = 90, U = 110, boxes IoU 0.82: a hit
    assert (first.intersection, first.union, first.box_hit) == (5, 15, False)
    assert (second.intersection, second.union, second.box_hit) == (90, 110, True)
    scores = clevr_ref_scores([first, second], ["a", "b"])
    assert scores.cumulative_iou == pytest.approx(100 * 95 / 125, abs=1e-4)  # 76.0
    assert scores.mean_iou == pytest.approx(100 * (5 / 15 + 90 / 110) / 2, abs=1e-4)  # 57.58
    assert scores.accuracy == 50.0 and scores.num_refexps == 2
    assert scores.per_family == {"a": pytest.approx(33.33), "b": pytest.approx(81.82)}
    # The predicted box is scored as given, not re-derived from the mask.
    assert score_mask(_rect(0, 5, 1, 10), _rect(0, 0, 1, 10), [0.0, 0.0, 10.0, 1.0]).box_hit


def test_scenes_and_refexps_are_read_with_one_line_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "scenes.json", {"scenes": [_scene(0), _scene(1)]})
    scenes = read_scenes(path)
    assert scenes[1].union([0, 1]).sum() == 100 + 800
    refexps = {"refexps": [{"refexp": "The red cube.", "image_index": 1, "refexp_family_index": 0,
                            "program": [{"type": "scene", "inputs": [], "value_inputs": []},
                                        {"type": "filter_color", "inputs": [0], "value_inputs": ["red"],
                                         "_output": [0]}]}]}
    assert read_refexps(_write(tmp_path / "r.json", refexps), [2, 2])[0].output == (0,)
    cases = [
        ({"images": []}, "expected an object with a 'scenes' list, got keys images"),
        ({"scenes": [_scene(1)]}, "scene 0: image_index is 1; scene k must be image k"),
        ({"scenes": [{**_scene(), "obj_mask": {"0": "153600", "1": "153600"}}]}, r"obj_mask keys \['0', '1'\]"),
        ({"scenes": [{**_scene(), "objects": "none"}]}, "scene 0: 'objects' should be a list, got string"),
    ]
    for data, message in cases:
        with pytest.raises(UserError, match=message):
            read_scenes(_write(tmp_path / "bad.json", data))
    broken = read_scenes(_write(tmp_path / "rle.json", {"scenes": [{**_scene(), "obj_mask": {"1": "5,x", "2": "1"}}]}))
    with pytest.raises(UserError, match=r'rle.json: scene 0: obj_mask\["1"\]: run 2 is \'x\', not a whole number'):
        broken[0].mask(0)
    refexps["refexps"][0]["program"][-1]["_output"] = [2]
    with pytest.raises(UserError, match=r"refexp 0: _output list \[2\] should list object indices 0..1 of scene 1"):
        read_refexps(_write(tmp_path / "r.json", refexps), [2, 2])
    del refexps["refexps"][0]["program"][-1]["_output"]
    with pytest.raises(UserError, match="refexp 0: the program's last node has no '_output'"):
        read_refexps(_write(tmp_path / "r.json", refexps), [2, 2])


def test_grid_feature_files_with_the_wrong_name_shape_or_rows_are_refused(tmp_path: Path) -> None:
    def h5(name: str, **datasets: np.ndarray) -> Path:
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f.create_dataset(key, data=value)
        return path

    good = h5("good.h5", features=np.ones((3, 4, 2, 2), np.float32))
    assert read_grid_features(good, 3).shape == (3, 4, 2, 2)
    with pytest.raises(UserError, match=r"wrong.h5: no dataset 'features' \(found feats\)"):
        read_grid_features(h5("wrong.h5", feats=np.ones((3, 4, 2, 2), np.float32)), 3)
    with pytest.raises(UserError, match=r"flat.h5: 'features' should be \(images, C, H, W\), got shape \(3, 4, 4\)"):
        read_grid_features(h5("flat.h5", features=np.ones((3, 4, 4), np.float32)), 3)
    with pytest.raises(UserError, match="good.h5: 'features' has 3 rows, the scenes file has 5 images"):
        read_grid_features(good, 5)
    with pytest.raises(UserError, match="missing.h5: feature file not found"):
        read_grid_features(tmp_path / "missing.h5", 3)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="text.h5: not a readable HDF5 file"):
        read_grid_features(tmp_path / "text.h5", 3)
    arrays = {"refexps": np.ones((2, 5), np.int32), "programs": np.ones((2, 4), np.int32),
              "image_idxs": np.zeros(2, np.int64), "orig_idxs": np.arange(2), "refexp_families": np.zeros(2, np.int64),
              "answers": np.zeros((2, 320, 320))}
    assert read_iep_refexps(h5("iep.h5", **arrays))["programs"].shape == (2, 4)
    with pytest.raises(UserError, match=r"small.h5: 'answers' should be \(R, 320, 320\) masks, got \(2, 20, 20\)"):
        read_iep_refexps(h5("small.h5", **{**arrays, "answers": np.zeros((2, 20, 20))}))
    with pytest.raises(UserError, match="rows.h5: 'image_idxs' has 3 rows, 'refexps' has 2"):
        read_iep_refexps(h5("rows.h5", **{**arrays, "image_idxs": np.zeros(3, np.int64)}))
    with pytest.raises(UserError, match="questions.h5: no dataset 'refexps'"):
        read_iep_refexps(h5("questions.h5", questions=np.ones((2, 5), np.int32)))
    vocab = {"refexp_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "The": 4},
             "program_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}, "answer_token_to_idx": None}
    assert read_iep_vocab(_write(tmp_path / "vocab.json", vocab))["refexp_token_to_idx"]["The"] == 4
    vocab["program_token_to_idx"] = {"<START>": 0}
    with pytest.raises(UserError, match=r"program_token_to_idx\['<NULL>'\] should be 0, got null"):
        read_iep_vocab(_write(tmp_path / "vocab.json", vocab))


def test_cell_boxes_tile_the_image_row_major() -> None:
    boxes = cell_boxes(2, 3, 320, 480)
    assert boxes.tolist()[:2] == [[0, 0, 160, 160], [160, 0, 320, 160]] and boxes[3].tolist() == [0, 160, 160, 320]


def test_results_files_are_complete_and_scored_against_the_scene_masks(tmp_path: Path) -> None:
    scenes = _write(tmp_path / "scenes.json", {"scenes": [_scene(0)]})
    program = [{"type": "scene", "inputs": [], "value_inputs": [], "_output": [0, 1]}]
    refexps = _write(tmp_path / "refexps.json", {"refexps": [
        {"refexp": "The things.", "image_index": 0, "program": program},
        {"refexp": "The red thing.", "image_index": 0, "program": [{**program[0], "_output": [0]}]}]})
    exact = _rect(0, 0, 10, 10)
    entries = [{"refexp_index": 1, "image_index": 0, "mask_rle": encode_rle(exact), "box": [0, 0, 10, 10]},
               {"refexp_index": 0, "image_index": 0, "mask_rle": encode_rle(exact), "box": [0, 0, 10, 10]}]
    with pytest.raises(UserError, match="incomplete submission: 1 of 2 refexp_indexs have no prediction"):
        write_results(tmp_path / "half.json", entries[:1], [0, 1])
    assert not (tmp_path / "half.json").exists()
    path = write_results(tmp_path / "results.json", entries, [0, 1])
    assert [e["refexp_index"] for e in json.loads(path.read_text())] == [0, 1]
    scores = evaluate_results_files(refexps, scenes, path)
    # Expression 0 refers to both objects (100 + 800 pixels) and gets 100 of them; expression 1 is exact.
    assert scores.cumulative_iou == pytest.approx(100 * 200 / 1000) and scores.mean_iou == pytest.approx(
        100 * (100 / 900 + 1) / 2, abs=1e-4)
    _write(tmp_path / "bad.json", [{**entries[0], "mask_rle": "1,2"}, entries[1]])
    with pytest.raises(UserError, match="bad.json: refexp_index 1: mask_rle: the runs add up to 3 pixels"):
        evaluate_results_files(refexps, scenes, tmp_path / "bad.json")
