"""Tests for the synthetic RefCOCO generator: formats, unambiguous sentences, determinism, safety."""

from __future__ import annotations

import io
import json
import pickle
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.synth import SynthReferConfig, SynthVqaConfig, generate_refer, generate_vqa
from nas.synth import refer_writer
from nas.synth.features import make_prototypes
from nas.synth.world import COLORS, propose_regions, sample_scene

TINY = SynthReferConfig(seed=3, train_images=8, val_images=3, testA_images=3, testB_images=2, feature_dim=32)
SPLITS = ("train", "val", "testA", "testB")
# An independent oracle: the words annotators may use, mapped back to attribute values.
SHAPE = {"cube": "cube", "block": "cube", "sphere": "sphere", "ball": "sphere", "cylinder": "cylinder"}
WORD = {**{c: ("color", c) for c in COLORS}, "metal": ("material", "metal"), "shiny": ("material", "metal"),
        "rubber": ("material", "rubber"), "matte": ("material", "rubber"), "small": ("size", "small"),
        "tiny": ("size", "small"), "large": ("size", "large"), "big": ("size", "large")}
REL = {"left of": "left of", "to the left of": "left of", "right of": "right of",
       "to the right of": "right of", "above": "above", "below": "below", "under": "below"}
EXTREME = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}
MARGIN, RATIO, TOL = 0.05, 1.25, 1e-3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refer") / "data"
    generate_refer(root, TINY, progress=False)
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - never returns
        raise pickle.UnpicklingError(f"refs(unc).p needs {module}.{name}")


def _refs(root: Path) -> list[dict]:
    data = (root / "refcoco" / "refs(unc).p").read_bytes()
    assert data[:2] == b"\x80\x02"  # protocol 2, readable by refer.py's Python-2 cPickle
    return _PlainUnpickler(io.BytesIO(data)).load()


def _npz(root: Path, image_id: int) -> dict[str, np.ndarray]:
    with np.load(root / "coco_extract" / "train2014" / f"COCO_train2014_{image_id:012d}.jpg.npz") as z:
        return {k: z[k] for k in z.files}


def _xyxy(xywh: list[float]) -> np.ndarray:
    x, y, w, h = xywh
    return np.array([x, y, x + w, y + h])


def _iou(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[2], boxes[:, 2]) - np.maximum(a[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], boxes[:, 3]) - np.maximum(a[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + areas - inter)


def _cat_process(cat: int) -> int:  # SimREC data/data_process.py, as released
    for lo, hi, off in ((1, 11, 1), (13, 25, 2), (27, 28, 3), (31, 44, 5), (46, 65, 6), (67, 67, 7),
                        (70, 70, 9), (72, 82, 10), (84, 90, 11)):
        if lo <= cat <= hi:
            return cat - off
    return cat


def test_instances_json(dataset: Path) -> None:
    inst = _json(dataset / "refcoco" / "instances.json")
    assert set(inst) == {"images", "annotations", "categories"}
    cats = {c["id"]: c for c in inst["categories"]}
    assert sorted(c["name"] for c in cats.values()) == ["cube", "cylinder", "sphere"]
    assert all(set(c) == {"id", "name", "supercategory"} and isinstance(c["id"], int) for c in cats.values())
    images = {i["id"]: i for i in inst["images"]}
    assert len(images) == TINY.total_images and all(0 < i < 600_000 for i in images)
    for i in images.values():
        assert set(i) == {"id", "file_name", "height", "width"}
        assert i["file_name"] == f"COCO_train2014_{i['id']:012d}.jpg"
        assert (i["width"], i["height"]) == (TINY.image_width, TINY.image_height)
    assert len({a["id"] for a in inst["annotations"]}) == len(inst["annotations"])
    for a in inst["annotations"]:
        assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
        assert a["image_id"] in images and a["category_id"] in cats and a["iscrowd"] == 0
        assert len(a["bbox"]) == 4 and all(isinstance(v, float) for v in a["bbox"])
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= TINY.image_width + 0.01 and y + h <= TINY.image_height + 0.01
        assert a["area"] == pytest.approx(w * h, abs=0.05)
        (poly,) = a["segmentation"]
        assert np.allclose(poly, [x, y, x + w, y, x + w, y + h, x, y + h], atol=0.011)
    per_image = Counter(a["image_id"] for a in inst["annotations"])
    assert set(per_image) == set(images)
    assert all(TINY.min_objects <= n <= TINY.max_objects for n in per_image.values())
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_refs_pickle(dataset: Path) -> None:
    refs = _refs(dataset)
    inst = _json(dataset / "refcoco" / "instances.json")
    anns = {a["id"]: a for a in inst["annotations"]}
    assert isinstance(refs, list) and [r["ref_id"] for r in refs] == list(range(len(refs)))
    split_of: dict[int, str] = {}
    sent_ids = []
    for r in refs:
        assert set(r) == {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sent_ids",
                          "sentences"}
        assert r["split"] in SPLITS and split_of.setdefault(r["image_id"], r["split"]) == r["split"]
        ann = anns[r["ann_id"]]
        assert (ann["image_id"], ann["category_id"]) == (r["image_id"], r["category_id"])
        assert r["file_name"] == f"COCO_train2014_{r['image_id']:012d}_{r['ann_id']}.jpg"
        assert TINY.min_sentences <= len(r["sentences"]) <= TINY.max_sentences
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        sent_ids += r["sent_ids"]
        for s in r["sentences"]:
            assert set(s) == {"sent_id", "tokens", "raw", "sent"}
            assert s["sent"] == s["sent"].lower() and s["tokens"] == s["sent"].split()
            assert s["raw"].lower() == s["sent"] and all(isinstance(t, str) for t in s["tokens"])
        assert len({s["sent"].removeprefix("the ") for s in r["sentences"]}) == len(r["sentences"])
    assert sorted(sent_ids) == list(range(len(sent_ids)))
    assert set(split_of.values()) == set(SPLITS)
    assert Counter(split_of.values()) == {s: getattr(TINY, f"{s}_images") for s in SPLITS}
    refs_per_image = Counter(r["image_id"] for r in refs)
    assert max(refs_per_image.values()) <= TINY.refs_per_image
    meta = _json(dataset / "synth_meta.json")
    assert meta["summary"]["num_refs"] == dict(Counter(r["split"] for r in refs))


def test_simrec_anns(dataset: Path) -> None:
    simrec = _json(dataset / "anns" / "refcoco.json")
    refs = _refs(dataset)
    anns = {a["id"]: a for a in _json(dataset / "refcoco" / "instances.json")["annotations"]}
    assert list(simrec) == list(SPLITS)
    for split in SPLITS:
        expected = []
        for r in (r for r in refs if r["split"] == split):
            entry = {"iid": r["image_id"], "bbox": anns[r["ann_id"]]["bbox"],
                     "cat_id": _cat_process(r["category_id"]), "mask_id": r["ref_id"]}
            sents = [s["sent"] for s in r["sentences"]]
            expected += ([{**entry, "refs": sents}] if split == "train"
                         else [{**entry, "refs": [s]} for s in sents])
        assert simrec[split] == expected, split
        assert all(set(e) == {"iid", "bbox", "cat_id", "refs", "mask_id"} for e in simrec[split])
        assert all(0 <= e["cat_id"] < 80 for e in simrec[split])


def test_npz_candidates_cover_targets(dataset: Path) -> None:
    inst = _json(dataset / "refcoco" / "instances.json")
    anns = {a["id"]: a for a in inst["annotations"]}
    meta = _json(dataset / "synth_meta.json")
    for image in inst["images"]:
        z = _npz(dataset, image["id"])
        assert set(z) == {"x", "bbox", "num_bbox", "image_h", "image_w"}
        n = TINY.num_candidates
        assert z["x"].dtype == np.float32 and z["x"].shape == (TINY.feature_dim, n) and (z["x"] >= 0).all()
        assert z["bbox"].dtype == np.float32 and z["bbox"].shape == (n, 4) and int(z["num_bbox"]) == n
        assert (int(z["image_h"]), int(z["image_w"])) == (image["height"], image["width"])
        b = z["bbox"]
        assert (b[:, :2] >= 0).all() and (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
        assert (b[:, 2] <= image["width"]).all() and (b[:, 3] <= image["height"]).all()
        for obj in meta["images"][str(image["id"])]["objects"]:  # meta xyxy == json xywh
            assert np.allclose(obj["box"], _xyxy(anns[obj["ann_id"]]["bbox"]), atol=0.011)
    for ref in _refs(dataset):
        m = meta["refs"][str(ref["ref_id"])]
        gt = _xyxy(anns[ref["ann_id"]]["bbox"])
        assert np.allclose(m["target_box"], gt, atol=0.011)
        assert m["attributes"]["shape"] in {"cube", "sphere", "cylinder"}
        iou = _iou(gt, _npz(dataset, ref["image_id"])["bbox"].astype(np.float64))
        assert iou.max() >= 0.5 and len(m["positives"]) >= 1
        assert all(iou[r] >= 0.5 - TOL for r in m["positives"])
        assert all(iou[r] < 0.5 + TOL for r in set(range(len(iou))) - set(m["positives"]))


def test_features_carry_attributes_of_covering_boxes(dataset: Path) -> None:
    protos = make_prototypes(TINY.seed, TINY.feature_dim)
    meta = _json(dataset / "synth_meta.json")
    hit, miss = [], []
    for ref in meta["refs"].values():
        x = _npz(dataset, ref["image_id"])["x"].T
        cos = x @ protos.of("color", ref["attributes"]["color"]) / np.linalg.norm(x, axis=1)
        hit += cos[ref["positives"]].tolist()
        miss += np.delete(cos, ref["positives"]).tolist()
    assert np.mean(hit) > np.mean(miss) + 0.2


# ---- an independent oracle: resolve every sentence from the stored boxes and attributes ----

def _desc(text: str) -> dict[str, str]:
    *adjs, noun = text.split()
    attrs = dict(WORD[w] for w in adjs)
    assert len(attrs) == len(adjs), text
    if noun not in ("object", "thing"):
        attrs["shape"] = SHAPE[noun]
    return attrs


def _match(objs: list[dict], attrs: dict[str, str]) -> list[int]:
    return [i for i, o in enumerate(objs) if all(o[k] == v for k, v in attrs.items())]


def _resolve(sent: str, objs: list[dict], c: np.ndarray, size: tuple[int, int]) -> tuple[str, int]:
    """The one object ``sent`` refers to, asserting that no other object fits it."""
    s = sent.removeprefix("the ")
    rels = "|".join(sorted(REL, key=len, reverse=True))
    if m := re.fullmatch(r"(.+?) (?:closest|nearest) to the (.+)", s):
        (b,) = _match(objs, _desc(m[2]))
        group = [o for o in _match(objs, _desc(m[1])) if o != b]
        d = sorted((float(np.linalg.norm(c[o] - c[b])), o) for o in group)
        assert len(d) == 1 or d[1][0] >= RATIO * d[0][0] - TOL, sent
        return "nearest", d[0][1]
    if m := re.fullmatch(rf"(.+?) ({rels}) the (.+)", s):
        (b,) = _match(objs, _desc(m[3]))
        rel = REL[m[2]]
        axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[rel]
        margin = MARGIN * size[axis]
        delta = {o: sign * (c[o][axis] - c[b][axis]) for o in _match(objs, _desc(m[1])) if o != b}
        hits = [o for o, d in delta.items() if d > 0]
        assert len(hits) == 1 and all(abs(d) >= margin - TOL for d in delta.values()), sent
        return "relation", hits[0]
    if m := re.fullmatch(r"(leftmost|rightmost|topmost|bottommost) (.+)", s):
        axis, sign = EXTREME[m[1]]
        group = sorted(_match(objs, _desc(m[2])), key=lambda o: sign * c[o][axis])
        assert len(group) >= 2 and abs(c[group[1]][axis] - c[group[0]][axis]) >= MARGIN * size[axis] - TOL
        return "extreme", group[0]
    (hit,) = _match(objs, _desc(s))
    return "attribute", hit


def test_sentences_single_out_their_target(dataset: Path) -> None:
    anns = {a["id"]: a for a in _json(dataset / "refcoco" / "instances.json")["annotations"]}
    meta = _json(dataset / "synth_meta.json")
    kinds = Counter()
    for ref in _refs(dataset):
        objs = meta["images"][str(ref["image_id"])]["objects"]
        boxes = np.array([_xyxy(anns[o["ann_id"]]["bbox"]) for o in objs])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        target = [o["ann_id"] for o in objs].index(ref["ann_id"])
        stored = meta["refs"][str(ref["ref_id"])]["kinds"]
        for s, kind in zip(ref["sentences"], stored):
            got_kind, hit = _resolve(s["sent"], objs, centres, (TINY.image_width, TINY.image_height))
            assert (got_kind, hit) == (kind, target), s["sent"]
            kinds[kind] += 1
        assert "attribute" in stored or len(set(stored)) > 1  # a ref mixes kinds when it can
    assert set(kinds) == {"attribute", "relation", "extreme", "nearest"}


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cfg = replace(TINY, train_images=3, val_images=2, testA_images=1, testB_images=1)
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (5, 5, 6)):
        generate_refer(root, replace(cfg, seed=seed), progress=False)
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".npz":  # zip members carry a timestamp; the arrays must agree
            za, zb = np.load(roots[0] / rel), np.load(roots[1] / rel)
            assert all(np.array_equal(za[k], zb[k]) for k in za.files), rel
        else:
            assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel
    for rel in ("refcoco/refs(unc).p", "refcoco/instances.json", "anns/refcoco.json"):
        assert (roots[0] / rel).read_bytes() != (roots[2] / rel).read_bytes(), rel


def test_crash_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = np.savez_compressed

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(refer_writer.np, "savez_compressed", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_refer(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rerun_is_noop_and_config_change_regenerates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    cfg = replace(TINY, train_images=2, val_images=1, testA_images=1, testB_images=0)
    first = generate_refer(root, cfg, progress=False)
    meta_bytes = (root / "synth_meta.json").read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    with monkeypatch.context() as m:
        m.setattr(refer_writer, "_build", boom)
        assert generate_refer(root, cfg, progress=False) == first
    assert (root / "synth_meta.json").read_bytes() == meta_bytes
    second = generate_refer(root, replace(cfg, seed=9), progress=False)
    assert _json(root / "synth_meta.json")["config"]["seed"] == 9 and second.root == root
    assert second.num_images == {"train": 2, "val": 1, "testA": 1, "testB": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_foreign_directory_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a vlnas synthetic dataset"):
        generate_refer(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    vqa = tmp_path / "vqa"  # another generator's dataset is not ours to replace either
    generate_vqa(vqa, SynthVqaConfig(train_images=1, val_images=1, test_images=0, feature_dim=8),
                 progress=False)
    with pytest.raises(UserError, match="vlnas-synth-refer"):
        generate_refer(vqa, TINY, progress=False)
    assert (vqa / "vqa").is_dir()
    with pytest.raises(UserError, match="num_candidates"):
        SynthReferConfig(num_candidates=20, max_objects=7)
    with pytest.raises(UserError, match="min_sentences"):
        SynthReferConfig(min_sentences=4, max_sentences=3)
    with pytest.raises(UserError, match="testA_images"):
        SynthReferConfig(testA_images=-1)


def test_proposals_fall_in_their_iou_bands() -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        scene = sample_scene(rng, min_objects=3, max_objects=7, max_distractors=0, width=480, height=320)
        props = propose_regions(scene, 36, rng)
        assert len(props.boxes) == len(props.owners) == len(props.coverage) == 36
        boxes = np.array(props.boxes)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 480).all() and (boxes[:, 3] <= 320).all()
        gts = np.array([scene.box(i) for i in range(len(scene.objects))])
        for row, owner in enumerate(props.owners):
            ious = _iou(boxes[row], gts)
            if owner is None:  # clutter never overlaps an object much
                assert ious.max() < 0.3
            else:
                assert ious[owner] == pytest.approx(props.coverage[row])
        for i in range(len(gts)):
            own = [props.coverage[r] for r, o in enumerate(props.owners) if o == i]
            assert sum(0.6 <= c <= 0.95 for c in own) == 2 and sum(0.3 <= c <= 0.45 for c in own) == 2
