"""LXMERT obj36 TSV features: bit-exact round trip, LXMERT's and BUTD's column orders, the cache."""

from __future__ import annotations

import base64
import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.features_tsv import LXMERT_COLUMNS, ObjRecord, load_tsv_features, read_obj_tsv, write_obj_tsv


def records(count: int = 3, dim: int = 8, seed: int = 0) -> list[ObjRecord]:
    rng = np.random.default_rng(seed)
    made = []
    for index in range(count):
        boxes_n = int(rng.integers(2, 6))
        corner = rng.uniform(0, 300, (boxes_n, 2)).astype(np.float32)
        made.append(ObjRecord(img_id=f"COCO_val2014_{index + 40:012d}", img_h=480, img_w=640,
                              boxes=np.concatenate([corner, corner + 10], 1),
                              features=rng.standard_normal((boxes_n, dim)).astype(np.float32),
                              objects_id=rng.integers(0, 1600, boxes_n), objects_conf=rng.random(boxes_n, np.float32),
                              attrs_id=rng.integers(0, 400, boxes_n), attrs_conf=rng.random(boxes_n, np.float32)))
    return made


def b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode()


def test_a_written_tsv_reads_back_bit_exactly_and_rewrites_to_the_same_bytes(tmp_path: Path) -> None:
    made = records()
    path = write_obj_tsv(tmp_path / "val2014_obj36.tsv", made)
    back = list(read_obj_tsv(path))
    assert [r.img_id for r in back] == [r.img_id for r in made]
    for ours, theirs in zip(back, made):
        assert (ours.img_h, ours.img_w) == (480, 640)
        for key in ("boxes", "features", "objects_id", "objects_conf", "attrs_id", "attrs_conf"):
            assert getattr(ours, key).dtype == getattr(theirs, key).dtype
            assert getattr(ours, key).tobytes() == getattr(theirs, key).tobytes()
    again = write_obj_tsv(tmp_path / "again.tsv", back)
    assert again.read_bytes() == path.read_bytes()


def test_a_hand_built_tsv_in_lxmerts_order_loads(tmp_path: Path) -> None:
    """Written as LXMERT's extract_coco_image.py does: csv.DictWriter, tab-separated, no header."""
    features = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    boxes = np.array([[0, 0, 10, 20], [5, 5, 50, 60], [1, 2, 3, 4]], np.float32)
    path = tmp_path / "hand.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LXMERT_COLUMNS, delimiter="\t")
        writer.writerow({"img_id": "COCO_val2014_000000000042", "img_h": 427, "img_w": 640,
                         "objects_id": b64(np.array([1, 2, 3], np.int64)),
                         "objects_conf": b64(np.array([0.9, 0.8, 0.7], np.float32)),
                         "attrs_id": b64(np.array([4, 5, 6], np.int64)),
                         "attrs_conf": b64(np.array([0.5, 0.4, 0.3], np.float32)),
                         "num_boxes": 3, "boxes": b64(boxes), "features": b64(features)})
    (record,) = read_obj_tsv(path)
    assert record.img_id == "COCO_val2014_000000000042" and (record.img_h, record.img_w) == (427, 640)
    assert np.array_equal(record.features, features) and np.array_equal(record.boxes, boxes)
    assert record.objects_id.tolist() == [1, 2, 3] and record.attrs_conf.tolist() == pytest.approx([0.5, 0.4, 0.3])


def test_butd_six_column_order_puts_width_before_height(tmp_path: Path) -> None:
    features = np.ones((2, 4), np.float32)
    boxes = np.zeros((2, 4), np.float32)
    path = tmp_path / "butd.tsv"
    path.write_text("\t".join(["391895", "640", "360", "2", b64(boxes), b64(features)]) + "\n")
    (record,) = read_obj_tsv(path)
    assert (record.img_id, record.img_w, record.img_h) == ("391895", 640, 360)
    assert record.objects_id is None and record.features.shape == (2, 4)


def test_the_cache_holds_what_parsing_gives(tmp_path: Path) -> None:
    made = records(count=4, dim=6)
    path = write_obj_tsv(tmp_path / "val2014_obj36.tsv", made)
    first = load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    cached = load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    assert isinstance(cached.features, np.memmap)
    assert first.image_ids.tolist() == cached.image_ids.tolist() == [r.img_id for r in made]
    assert [cached.row_of[number] for number in (40, 41, 42, 43)] == [0, 1, 2, 3]  # how VQA asks
    for row, record in enumerate(made):
        kept = min(4, len(record.boxes))
        assert cached.num_regions[row] == kept
        assert np.array_equal(cached.features[row, :kept], record.features[:kept])
        assert not cached.features[row, kept:].any()
        assert np.array_equal(cached.boxes[row, :kept], record.boxes[:kept])
        assert cached.image_size[row].tolist() == [480, 640]
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 1  # one cache, no leftovers


@pytest.mark.parametrize("line,expected", [
    ("a\tb\tc\n", "line 1: expected 10 tab-separated columns (LXMERT) or 6 (BUTD), got 3"),
    ("1\t640\t480\ttwo\tAAAA\tAAAA\n", "line 1, column num_boxes: expected a whole number, got 'two'"),
    ("1\t640\t480\t1\t!!notbase64\tAAAA\n", "line 1, column boxes: not valid base64"),
    ("1\t640\t480\t2\tAAAAAAAAAAA=\tAAAA\n", "line 1, column boxes: expected 2 x 4 floats, got 2 values"),
    ("1\t640\t480\t2\tAAAAAAA=\tAAAA\n", "line 1, column boxes: 5 bytes do not hold 2 row(s) of float32"),
])
def test_malformed_lines_are_one_line_errors_naming_line_and_column(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(line)
    with pytest.raises(UserError, match="bad.tsv: " + expected.replace("(", r"\(").replace(")", r"\)")):
        list(read_obj_tsv(path))


def test_a_truncated_file_fails_cleanly_and_leaves_no_cache(tmp_path: Path) -> None:
    path = write_obj_tsv(tmp_path / "val2014_obj36.tsv", records(count=3))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])  # cut inside the last line's features
    with pytest.raises(UserError, match="line 3"):
        load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "features").iterdir())


def test_a_cache_that_would_not_fit_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as shutil_module

    from nas.features import cache_bytes

    path = write_obj_tsv(tmp_path / "val2014_obj36.tsv", records(count=3, dim=8))
    needed = cache_bytes(3, 4, 8)
    real = shutil_module.disk_usage
    monkeypatch.setattr("nas.limits.shutil.disk_usage",
                        lambda folder: real(folder)._replace(free=needed))  # 5% short of the margin
    with pytest.raises(UserError, match=f"the feature cache needs about {needed} bytes but only {needed} bytes is free"):
        load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    assert not list(tmp_path.glob("cache/features/*"))
    monkeypatch.setattr("nas.limits.shutil.disk_usage", lambda folder: real(folder)._replace(free=2 * needed))
    assert len(load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False).image_ids) == 3


def test_named_image_ids_of_gqa_and_nlvr2_are_kept_and_found_by_name(tmp_path: Path) -> None:
    made = records(count=4, dim=6)
    names = ["2375429", "n250821", "dev-850-0-img0", "dev-850-0-img1"]  # VG, GQA, NLVR2 left/right
    made = [dataclasses.replace(r, img_id=name) for r, name in zip(made, names)]
    path = write_obj_tsv(tmp_path / "mixed_obj36.tsv", made)
    loaded = load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    again = load_tsv_features(path, max_regions=4, cache_root=tmp_path / "cache", progress=False)
    assert again.image_ids.tolist() == names
    assert [again.row_of[name] for name in names] == [0, 1, 2, 3]
    assert again.row_of[2375429] == 0 and "250821" not in again.row_of  # only COCO/VG-style names are numbers
    assert np.array_equal(again.features[2, :2], made[2].features[:2]) and loaded.image_ids.dtype.kind == "U"
