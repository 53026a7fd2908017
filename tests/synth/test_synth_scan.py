"""Tests for the synthetic SCAN f30k_precomp generator: formats, true captions, determinism, safety."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.synth import SynthReferConfig, SynthScanConfig, generate_refer, generate_scan
from nas.synth import scan_writer
from nas.synth.expressions import generate_captions
from nas.synth.world import COLORS, sample_scene

TINY = SynthScanConfig(seed=3, train_images=10, dev_images=4, test_images=4, feature_dim=32)
SPLITS = ("train", "dev", "test")
SHAPE = {"cube": "cube", "block": "cube", "sphere": "sphere", "ball": "sphere", "cylinder": "cylinder"}
WORD = {**{c: ("color", c) for c in COLORS}, "metal": ("material", "metal"), "shiny": ("material", "metal"),
        "rubber": ("material", "rubber"), "matte": ("material", "rubber"), "small": ("size", "small"),
        "tiny": ("size", "small"), "large": ("size", "large"), "big": ("size", "large")}
REL = {"to the left of": (0, -1), "left of": (0, -1), "to the right of": (0, 1), "right of": (0, 1),
       "above": (1, -1), "below": (1, 1), "under": (1, 1)}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
MARGIN, RATIO, TOL = 0.05, 1.25, 1e-3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan") / "data"
    generate_scan(root, TINY, progress=False)
    return root


def _p(root: Path, split: str, name: str) -> Path:
    return root / "f30k_precomp" / f"{split}_{name}"


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text.splitlines()


def test_layout_shapes_and_ids(dataset: Path) -> None:
    seen_ids: list[int] = []
    for split in SPLITS:
        n = getattr(TINY, f"{split}_images")
        ims = np.load(_p(dataset, split, "ims.npy"))
        assert ims.dtype == np.float32 and ims.shape == (n, TINY.regions, TINY.feature_dim)
        assert (ims >= 0).all()
        boxes = np.load(_p(dataset, split, "boxes.npy"))
        assert boxes.dtype == np.float32 and boxes.shape == (n, TINY.regions, 4)
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 0] < boxes[..., 2]).all()
        assert (boxes[..., 1] < boxes[..., 3]).all()
        size = np.load(_p(dataset, split, "image_size.npy"))
        assert size.dtype == np.int64 and size.shape == (n, 2)
        assert (size == [TINY.image_height, TINY.image_width]).all()
        assert (boxes[..., 2] <= size[:, None, 1]).all() and (boxes[..., 3] <= size[:, None, 0]).all()
        caps = _lines(_p(dataset, split, "caps.txt"))
        assert len(caps) == 5 * n and all(c.strip() == c and c for c in caps)
        ids = [int(i) for i in _lines(_p(dataset, split, "ids.txt"))]
        if split == "train":  # MmNas: one id per image in train ...
            assert len(ids) == n and len(set(ids)) == n
            per_image = ids
        else:  # ... and one per caption in dev/test, of which it keeps every fifth
            assert len(ids) == 5 * n
            per_image = ids[::5]
            assert ids == [i for i in per_image for _ in range(5)] and len(set(per_image)) == n
        # SCAN's loader: im_div = 5 when the image count differs from the caption count.
        assert ims.shape[0] != len(caps) and len(caps) // 5 == ims.shape[0]
        seen_ids += per_image
    assert len(seen_ids) == len(set(seen_ids)) and all(0 <= i < 31_014 for i in seen_ids)
    meta = json.loads((dataset / "synth_meta.json").read_text())
    assert (meta["generator"], meta["version"]) == ("vlnas-synth-scan", 2)
    assert meta["summary"]["num_captions"] == {s: 5 * getattr(TINY, f"{s}_images") for s in SPLITS}
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


# ---- an independent oracle: every caption is true of the stored scene ----------------------

def _desc(text: str) -> dict[str, str]:
    *adjs, noun = re.sub(r"^an? ", "", text).split()
    attrs = dict(WORD[w] for w in adjs)
    assert len(attrs) == len(adjs) and noun in SHAPE, text  # captions always name the shape
    return {**attrs, "shape": SHAPE[noun]}


def _match(objs: list[dict], text: str) -> list[int]:
    attrs = _desc(text)
    return [i for i, o in enumerate(objs) if all(o[k] == v for k, v in attrs.items())]


def _true(kind: str, cap: str, objs: list[dict], c: np.ndarray, size: tuple[int, int]) -> bool:
    assert cap[0].isupper() and cap.endswith(".")
    s = cap[0].lower() + cap[1:-1]
    if kind == "relation":
        rels = "|".join(sorted(REL, key=len, reverse=True))
        m = re.fullmatch(rf"(an? .+?) ({rels}) (an? .+)", s)
        axis, sign = REL[m[2]]
        return any(a != b and sign * (c[a][axis] - c[b][axis]) >= MARGIN * size[axis] - TOL
                   for a in _match(objs, m[1]) for b in _match(objs, m[3]))
    if kind == "nearest":
        m = re.fullmatch(r"(an? .+?) next to (an? .+)", s)
        for a in _match(objs, m[1]):
            for b in _match(objs, m[2]):
                d = sorted(float(np.linalg.norm(c[o] - c[b])) for o in range(len(objs)) if o != b)
                nearest = abs(float(np.linalg.norm(c[a] - c[b])) - d[0]) < 1e-9
                if a != b and nearest and (len(d) == 1 or d[1] >= RATIO * d[0] - TOL):
                    return True
        return False
    if kind == "census":
        m = re.fullmatch(r"(\w+) objects including (an? .+?) and (an? .+)", s)
        return NUMBERS.index(m[1]) == len(objs) and all(_match(objs, g) for g in m.groups()[1:])
    if kind == "shape_count":
        m = re.fullmatch(r"(\w+) (\w+)s and (an? .+?)(?: and (an? .+))?", s)
        shape = SHAPE[m[2]]
        others = [[o for o in _match(objs, g) if objs[o]["shape"] != shape] for g in m.groups()[2:] if g]
        return NUMBERS.index(m[1]) == sum(o["shape"] == shape for o in objs) and all(others)
    assert kind == "list", kind
    items = re.split(r", | and ", s)
    return 2 <= len(items) <= 3 and all(_match(objs, item) for item in items)


def test_captions_are_true_and_distinct(dataset: Path) -> None:
    meta = json.loads((dataset / "synth_meta.json").read_text())
    kinds = Counter()
    for split in SPLITS:
        caps = _lines(_p(dataset, split, "caps.txt"))
        ids = [int(i) for i in _lines(_p(dataset, split, "ids.txt"))]
        per_image = ids if split == "train" else ids[::5]
        for index, image_id in enumerate(per_image):
            image = meta["images"][f"{split}/{image_id}"]
            assert image["index"] == index
            objs = image["objects"]
            boxes = np.array([o["box"] for o in objs])
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            mine = caps[5 * index:5 * index + 5]
            assert len(set(mine)) == 5
            for kind, cap in zip(image["caption_kinds"], mine):
                assert _true(kind, cap, objs, centres, (TINY.image_width, TINY.image_height)), cap
                kinds[kind] += 1
    assert set(kinds) == {"relation", "nearest", "census", "shape_count", "list"}


def test_captions_rarely_repeat_across_images() -> None:
    rng = np.random.default_rng(0)
    images_of: dict[str, set[int]] = defaultdict(set)
    for i in range(300):
        scene = sample_scene(rng, min_objects=3, max_objects=7, max_distractors=0, width=480, height=320)
        for _, cap in generate_captions(scene, 5, rng):
            images_of[cap].add(i)
    shared = sum(len(v) for v in images_of.values() if len(v) > 1)
    assert shared / sum(len(v) for v in images_of.values()) < 0.05


def test_captions_are_rarely_true_of_other_images() -> None:
    """Mined hard negatives must be real negatives: a caption of one image should rarely also
    describe another (measured 0.3% on the `small` built-in set; 2% before captions named two
    fully described objects, which made mining collapse retrieval)."""
    rng = np.random.default_rng(1)
    scenes, captions = [], []
    for _ in range(60):
        scene = sample_scene(rng, min_objects=3, max_objects=7, max_distractors=0, width=480, height=320)
        scenes.append(scene)
        captions.append(generate_captions(scene, 5, rng))
    hits = total = 0
    for i, scene in enumerate(scenes):
        objs = [{a: o.attr(a) for a in ("color", "shape", "material", "size")} for o in scene.objects]
        centres = np.array([scene.centre(k) for k in range(len(objs))])
        for j, made in enumerate(captions):
            if j != i:
                hits += sum(_true(kind, cap, objs, centres, (480, 320)) for kind, cap in made)
                total += len(made)
    assert hits / total < 0.01, (hits, total)


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cfg = replace(TINY, train_images=3, dev_images=2, test_images=1)
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (5, 5, 6)):
        generate_scan(root, replace(cfg, seed=seed), progress=False)
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    assert len(files) == 1 + 5 * len(SPLITS)
    for rel in files:
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel
    for name in ("train_caps.txt", "train_ims.npy", "train_boxes.npy", "dev_ids.txt"):
        rel = Path("f30k_precomp") / name
        assert (roots[0] / rel).read_bytes() != (roots[2] / rel).read_bytes(), rel


def test_crash_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = np.save

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after the whole train split's arrays
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(scan_writer.np, "save", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_scan(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rerun_is_noop_and_config_change_regenerates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    cfg = replace(TINY, train_images=2, dev_images=1, test_images=1)
    first = generate_scan(root, cfg, progress=False)
    meta_bytes = (root / "synth_meta.json").read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    with monkeypatch.context() as m:
        m.setattr(scan_writer, "_build", boom)
        assert generate_scan(root, cfg, progress=False) == first
    assert (root / "synth_meta.json").read_bytes() == meta_bytes
    (root / "f30k_precomp" / "test_caps.txt").unlink()  # an incomplete dataset is rebuilt
    assert generate_scan(root, cfg, progress=False) == first
    assert (root / "f30k_precomp" / "test_caps.txt").is_file()
    second = generate_scan(root, replace(cfg, seed=9), progress=False)
    assert json.loads((root / "synth_meta.json").read_text())["config"]["seed"] == 9 and second.root == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_foreign_directory_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match="not a vlnas synthetic dataset"):
        generate_scan(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    refer = tmp_path / "refer"
    generate_refer(refer, SynthReferConfig(train_images=1, val_images=1, testA_images=0, testB_images=0,
                                           feature_dim=8), progress=False)
    with pytest.raises(UserError, match="vlnas-synth-scan"):
        generate_scan(refer, TINY, progress=False)
    assert (refer / "refcoco" / "instances.json").is_file()
    with pytest.raises(UserError, match="regions"):
        SynthScanConfig(regions=20, max_objects=7)
    with pytest.raises(UserError, match="dev_images"):
        SynthScanConfig(dev_images=0)
