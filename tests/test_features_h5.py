"""GQA-style HDF5 object features: read through the shared cache; bad files are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nas.errors import UserError
from nas.features_h5 import INFO_FILE, load_h5_features


def write_gqa(folder: Path, images: int = 5, dim: int = 6) -> dict:
    """Two files of 100-row slots, as GQA ships them; the info file says which rows are real."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    info, per_file = {}, (images + 1) // 2
    for k in range(2):
        features = np.zeros((per_file, 100, dim), np.float32)
        boxes = np.zeros((per_file, 100, 4), np.float32)
        for row in range(per_file):
            number = k * per_file + row
            if number >= images:
                break
            count = 3 + number
            features[row, :count] = rng.standard_normal((count, dim))
            boxes[row, :count] = rng.uniform(0, 100, (count, 4))
            info[str(2375400 + number)] = {"file": k, "idx": row, "objectsNum": count, "width": 500, "height": 333}
        with h5py.File(folder / f"gqa_objects_{k}.h5", "w") as handle:
            handle["features"], handle["bboxes"] = features, boxes
    (folder / INFO_FILE).write_text(json.dumps(info))
    return info


def test_cached_features_equal_the_h5_rows_the_info_file_names(tmp_path: Path) -> None:
    info = write_gqa(tmp_path / "gqa")
    loaded = load_h5_features(tmp_path / "gqa", ["2375403", "2375400"], 4, tmp_path / "cache", progress=False)
    again = load_h5_features(tmp_path / "gqa", ["2375403", "2375400"], 4, tmp_path / "cache", progress=False)
    assert isinstance(again.features, np.memmap) and loaded.image_ids.tolist() == ["2375403", "2375400"]
    assert again.row_of["2375400"] == again.row_of[2375400] == 1
    for row, image_id in enumerate(["2375403", "2375400"]):
        entry = info[image_id]
        with h5py.File(tmp_path / "gqa" / f"gqa_objects_{entry['file']}.h5") as handle:
            kept = min(4, entry["objectsNum"])
            assert np.array_equal(again.features[row, :kept], handle["features"][entry["idx"], :kept])
            assert np.array_equal(again.boxes[row, :kept], handle["bboxes"][entry["idx"], :kept])
        assert again.num_regions[row] == kept and again.image_size[row].tolist() == [333, 500]
    assert len(load_h5_features(tmp_path / "gqa", None, 4, tmp_path / "cache", progress=False).image_ids) == 5


def test_bad_h5_inputs_are_one_line_errors(tmp_path: Path) -> None:
    write_gqa(tmp_path / "gqa")
    with pytest.raises(UserError, match=r"gqa_objects_info.json: no entry for 1 image\(s\), e.g. '999'"):
        load_h5_features(tmp_path / "gqa", ["999"], 4, tmp_path / "cache", progress=False)
    with h5py.File(tmp_path / "gqa" / "gqa_objects_1.h5", "w") as handle:
        handle["feats"] = np.zeros((3, 100, 6), np.float32)
    with pytest.raises(UserError, match=r"gqa_objects_1.h5: no dataset 'features' \(found feats\)"):
        load_h5_features(tmp_path / "gqa", ["2375404"], 4, tmp_path / "cache", progress=False)
    (tmp_path / "gqa" / "gqa_objects_0.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="gqa_objects_0.h5: not a readable HDF5 file"):
        load_h5_features(tmp_path / "gqa", ["2375400"], 4, tmp_path / "cache", progress=False)
    (tmp_path / "gqa" / INFO_FILE).write_text('{"1": {"file": 0, "idx": "3", "objectsNum": 1, "width": 1, "height": 1}}')
    with pytest.raises(UserError, match="image 1: idx should be a whole number >= 0, got '3'"):
        load_h5_features(tmp_path / "gqa", None, 4, tmp_path / "cache", progress=False)
    (tmp_path / "gqa" / INFO_FILE).write_text("[" * 100000)
    with pytest.raises(UserError, match="gqa_objects_info.json: (not valid|unreadable) JSON"):
        load_h5_features(tmp_path / "gqa", None, 4, tmp_path / "cache", progress=False)
    (tmp_path / "gqa" / INFO_FILE).write_text('{"1": {"file": 0}}')
    with pytest.raises(UserError, match="image 1: missing idx, objectsNum, width, height"):
        load_h5_features(tmp_path / "gqa", None, 4, tmp_path / "cache", progress=False)
    assert not list(tmp_path.glob("cache/**/*.npy"))  # no cache, and no partial one, was left behind
