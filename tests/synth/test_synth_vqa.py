"""Tests for the synthetic VQA generator: formats, scene-consistent answers, determinism, safety."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.synth import FAMILIES, SynthVqaConfig, generate_vqa
from nas.synth import vqa_writer
from nas.synth.features import make_prototypes, region_features
from nas.synth.vqa_questions import (OFFICIAL_QUESTION_TYPES, _variants, _wrong, generate_questions,
                                     majority_answer, normalize_answer)
from nas.synth.world import COLORS, MATERIALS, SHAPES, SIZES, sample_scene

TINY = SynthVqaConfig(seed=3, train_images=8, val_images=4, test_images=3, feature_dim=32)
SUBTYPES = {"train": "train2014", "val": "val2014", "test": "test2015"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "datasets"
    generate_vqa(root, TINY, progress=False)
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _questions(root: Path, subtype: str) -> dict:
    return _json(root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json")


def _annotations(root: Path, subtype: str) -> dict:
    return _json(root / "vqa" / f"v2_mscoco_{subtype}_annotations.json")


def _npz(root: Path, subtype: str, image_id: int) -> dict[str, np.ndarray]:
    with np.load(root / "coco_extract" / subtype / f"COCO_{subtype}_{image_id:012d}.jpg.npz") as z:
        return {k: z[k] for k in z.files}


def test_layout_and_official_keys(dataset: Path) -> None:
    for split, subtype in SUBTYPES.items():
        q = _questions(dataset, subtype)
        assert set(q) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
        assert (q["task_type"], q["data_type"], q["data_subtype"]) == ("Open-Ended", "mscoco", subtype)
        assert len(q["questions"]) == getattr(TINY, f"{split}_images") * TINY.questions_per_image
        assert all(set(e) == {"image_id", "question", "question_id"} for e in q["questions"])
        ann = dataset / "vqa" / f"v2_mscoco_{subtype}_annotations.json"
        assert ann.is_file() == (split != "test")
        if split != "test":
            assert set(_json(ann)) == {"info", "license", "data_type", "data_subtype", "annotations"}
        n_npz = len(list((dataset / "coco_extract" / subtype).glob(f"COCO_{subtype}_*.jpg.npz")))
        assert n_npz == getattr(TINY, f"{split}_images")
    meta = _json(dataset / "synth_meta.json")
    assert (meta["generator"], meta["version"]) == ("vlnas-synth-clevr", 2)
    assert meta["config"]["seed"] == TINY.seed and set(meta["families"].values()) <= set(FAMILIES)
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_question_and_image_ids(dataset: Path) -> None:
    per_split = {}
    for split, subtype in SUBTYPES.items():
        qs = _questions(dataset, subtype)["questions"]
        per_split[split] = {e["image_id"] for e in qs}
        assert all(e["question_id"] // 1000 == e["image_id"] for e in qs)
        by_image = Counter(e["image_id"] for e in qs)
        for e in qs:
            assert 0 <= e["question_id"] % 1000 < by_image[e["image_id"]]
        assert len({e["question_id"] for e in qs}) == len(qs)
        if split != "test":
            anns = _annotations(dataset, subtype)["annotations"]
            assert [a["question_id"] for a in anns] == [e["question_id"] for e in qs]
    ids = [i for s in per_split.values() for i in s]
    assert len(ids) == len(set(ids)) and all(0 < i < 600_000 for i in ids)
    # every question id, VG's included, is filed under one family in the meta file
    meta = _json(dataset / "synth_meta.json")
    vg = _json(dataset / "vqa" / "VG_questions.json")["questions"]
    assert len(meta["families"]) == sum(len(_questions(dataset, s)["questions"]) for s in SUBTYPES.values()) + len(vg)


def test_visual_genome_pair(dataset: Path) -> None:
    """MCAN's layout: vqa/VG_questions.json + vqa/VG_annotations.json in the VQA v2 formats,
    about train images, with question ids no other split uses."""
    questions = _json(dataset / "vqa" / "VG_questions.json")
    annotations = _json(dataset / "vqa" / "VG_annotations.json")
    assert set(questions) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
    assert set(annotations) == {"info", "license", "data_type", "data_subtype", "annotations"}
    vg = questions["questions"]
    # ceil(0.05 * 8 train images) = 1 image, 3 questions each
    assert len(vg) == 3 and len({q["image_id"] for q in vg}) == 1
    assert all(set(q) == {"image_id", "question", "question_id"} for q in vg)
    assert [a["question_id"] for a in annotations["annotations"]] == [q["question_id"] for q in vg]
    assert all(a["image_id"] == q["image_id"] for a, q in zip(annotations["annotations"], vg))
    train = _questions(dataset, "train2014")["questions"]
    assert {q["image_id"] for q in vg} <= {q["image_id"] for q in train}  # features in train2014
    others = [q["question_id"] for s in SUBTYPES.values() for q in _questions(dataset, s)["questions"]]
    ids = [q["question_id"] for q in vg]
    assert len(set(ids)) == len(ids) and not set(ids) & set(others)
    assert all(q["question_id"] // 1000 == q["image_id"] for q in vg)
    # new questions: none repeats one the VQA file asks about the same image
    asked = {(q["image_id"], q["question"]) for q in train}
    assert not [q for q in vg if (q["image_id"], q["question"]) in asked]
    meta = _json(dataset / "synth_meta.json")
    assert meta["summary"]["num_questions"]["vg"] == 3 and meta["summary"]["num_images"]["vg"] == 1


def test_visual_genome_sizes() -> None:
    # default: 100 of 2000 train images x 3 = 300 questions; the presets scale with their train images
    from tasks.vqa.task import SYNTH_SIZES

    for size, images in (("default", 100), ("small", 40), ("tiny", 3)):
        config = SynthVqaConfig(**SYNTH_SIZES[size])
        assert len(vqa_writer._vg_images(config)) == images, size
    with pytest.raises(UserError, match=r"SynthVqaConfig.vg_questions_per_image=995: must be in 1..\(1000"):
        SynthVqaConfig(vg_questions_per_image=995)


def test_annotation_entries(dataset: Path) -> None:
    vg = _json(dataset / "vqa" / "VG_annotations.json")["annotations"]
    for a in [*_annotations(dataset, "train2014")["annotations"], *_annotations(dataset, "val2014")["annotations"],
              *vg]:
        assert set(a) == {"question_id", "image_id", "question_type", "answer_type",
                          "multiple_choice_answer", "answers"}
        assert a["question_type"] in OFFICIAL_QUESTION_TYPES
        assert a["answer_type"] in ("yes/no", "number", "other")
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(x["answer_confidence"] in ("yes", "maybe", "no") for x in a["answers"])
        given = [x["answer"] for x in a["answers"]]
        assert a["multiple_choice_answer"] == majority_answer(given)
        # controlled disagreement: a wrong answer never reaches the 4 votes of full credit
        assert sum(normalize_answer(g) == a["multiple_choice_answer"] for g in given) >= 7
        if a["answer_type"] == "number":
            assert a["multiple_choice_answer"].isdigit()


def test_npz_regions(dataset: Path) -> None:
    for split, subtype in SUBTYPES.items():
        for image_id in {e["image_id"] for e in _questions(dataset, subtype)["questions"]}:
            z = _npz(dataset, subtype, image_id)
            assert set(z) == {"x", "bbox", "num_bbox", "image_h", "image_w"}
            n = int(z["num_bbox"])
            assert z["x"].dtype == np.float32 and z["x"].shape == (TINY.feature_dim, n)
            assert z["bbox"].dtype == np.float32 and z["bbox"].shape == (n, 4)
            assert (int(z["image_w"]), int(z["image_h"])) == (TINY.image_width, TINY.image_height)
            b = z["bbox"]
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 0] < b[:, 2]).all()
            assert (b[:, 2] <= TINY.image_width).all() and (b[:, 3] <= TINY.image_height).all()
            assert TINY.min_objects <= n <= TINY.max_objects + TINY.max_distractors


# ---- an independent oracle: parse each question and answer it from the stored scene -------

_DESC = re.compile(rf"^(?:({'|'.join(SIZES)}) )?(?:({'|'.join(COLORS)}) )?"
                   rf"(?:({'|'.join(MATERIALS)}) )?({'|'.join(SHAPES)}|thing)s?$")


def _parse(desc: str) -> dict[str, str]:
    m = _DESC.match(desc)
    assert m, desc
    attrs = dict(zip(("size", "color", "material", "shape"), m.groups()))
    return {k: v for k, v in attrs.items() if v is not None and v != "thing"}


def _match(objs: list[dict], attrs: dict[str, str]) -> list[int]:
    return [i for i, o in enumerate(objs) if all(o[k] == v for k, v in attrs.items())]


def _resolve(objs: list[dict], desc: str) -> int:
    attrs = _parse(desc)
    hits = _match(objs, attrs)
    assert len(hits) == 1, (desc, objs)
    for k in range(len(attrs)):  # minimal: no smaller subset of the description is unique
        for sub in combinations(attrs, k):
            assert len(_match(objs, {a: attrs[a] for a in sub})) != 1, desc
    return hits[0]


def _oracle(family: str, text: str, objs: list[dict], centres: np.ndarray, width: int, height: int) -> str:
    yn = lambda b: "yes" if b else "no"  # noqa: E731

    def rel(a: int, r: str, b: int) -> bool:
        (ax, ay), (bx, by) = centres[a], centres[b]
        d = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[r]
        assert abs(d) >= 0.05 * (width if "of" in r else height), "relation too close to call"
        return d > 0

    if family == "exist":
        return yn(_match(objs, _parse(re.fullmatch(r"Is there a (.+)\?", text)[1])))
    if family == "count":
        return str(len(_match(objs, _parse(re.fullmatch(r"How many (.+) are there\?", text)[1]))))
    if family == "query_attribute":
        attr, desc = re.fullmatch(r"What (\w+) is the (.+)\?", text).groups()
        return objs[_resolve(objs, desc)][attr]
    if family == "compare_attribute":
        m = re.fullmatch(r"Are the (.+) and the (.+) the same (\w+)\?", text)
        a, b, attr = m.groups() if m else re.fullmatch(r"Is the (.+) the same (\w+) as the (.+)\?",
                                                       text).group(1, 3, 2)
        return yn(objs[_resolve(objs, a)][attr] == objs[_resolve(objs, b)][attr])
    rels = "left of|right of|above|below"
    if family == "relation":
        m = re.fullmatch(rf"Is the (.+) ({rels}) the (.+)\?", text)
        if m:
            return yn(rel(_resolve(objs, m[1]), m[2], _resolve(objs, m[3])))
        attr, r, desc = re.fullmatch(rf"What (\w+) is the thing ({rels}) the (.+)\?", text).groups()
        b = _resolve(objs, desc)
        hits = [a for a in range(len(objs)) if a != b and rel(a, r, b)]
        assert len(hits) == 1, text
        return objs[hits[0]][attr]
    attr, desc = re.fullmatch(r"What (\w+) is the thing nearest to the (.+)\?", text).groups()
    b = _resolve(objs, desc)
    dist = np.linalg.norm(centres - centres[b], axis=1)
    dist[b] = np.inf
    return objs[int(np.argmin(dist))][attr]


def test_answers_match_scene(dataset: Path) -> None:
    meta = _json(dataset / "synth_meta.json")
    seen = Counter()
    vg = (_json(dataset / "vqa" / "VG_annotations.json"), _json(dataset / "vqa" / "VG_questions.json"))
    for subtype, (answered, asked) in (
            ("train2014", (_annotations(dataset, "train2014"), _questions(dataset, "train2014"))),
            ("val2014", (_annotations(dataset, "val2014"), _questions(dataset, "val2014"))),
            ("train2014", vg)):  # VG questions are about train images
        for a, q in zip(answered["annotations"], asked["questions"]):
            scene = meta["scenes"][str(a["image_id"])]
            z = _npz(dataset, subtype, a["image_id"])
            objs = scene["objects"]
            boxes = z["bbox"][[o["region"] for o in objs]].astype(np.float64)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            family = meta["families"][str(a["question_id"])]
            expected = _oracle(family, q["question"], objs, centres, int(z["image_w"]), int(z["image_h"]))
            assert a["multiple_choice_answer"] == expected, (family, q["question"])
            seen[family] += 1
    assert set(seen) == set(FAMILIES)


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cfg = replace(TINY, train_images=3, val_images=2, test_images=1)
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (5, 5, 6)):
        generate_vqa(root, replace(cfg, seed=seed), progress=False)
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".json":
            assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel
        else:
            za, zb = np.load(roots[0] / rel), np.load(roots[1] / rel)
            assert all(np.array_equal(za[k], zb[k]) for k in za.files), rel
    q = "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
    assert (roots[0] / q).read_bytes() != (roots[2] / q).read_bytes()


def test_crash_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = np.savez_compressed

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(vqa_writer.np, "savez_compressed", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_vqa(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rerun_is_noop_and_config_change_regenerates(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    cfg = replace(TINY, train_images=2, val_images=1, test_images=1)
    first = generate_vqa(root, cfg, progress=False)
    meta_bytes = (root / "synth_meta.json").read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    with monkeypatch.context() as m:
        m.setattr(vqa_writer, "_build", boom)
        assert generate_vqa(root, cfg, progress=False) == first
    assert (root / "synth_meta.json").read_bytes() == meta_bytes
    second = generate_vqa(root, replace(cfg, seed=9), progress=False)
    assert _json(root / "synth_meta.json")["config"]["seed"] == 9 and second.root == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_foreign_directory_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a vlnas synthetic dataset"):
        generate_vqa(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="min_objects"):
        SynthVqaConfig(min_objects=5, max_objects=4)
    with pytest.raises(UserError, match="questions_per_image"):
        SynthVqaConfig(questions_per_image=1000)


def test_normalisation_and_annotator_answers() -> None:
    cases = {"Two dogs.": "2 dogs", "black-and-white": "black and white", "1,000": "1000",
             "U.S.A.": "usa", "3.5": "3.5", "yes!": "yes", "a cube": "cube", "none": "0"}
    assert {k: normalize_answer(k) for k in cases} == cases
    rng = np.random.default_rng(0)
    for answer in ["yes", "no", *map(str, range(8)), *COLORS, *SHAPES, *MATERIALS, *SIZES]:
        assert all(normalize_answer(v) == answer for v in _variants(answer)), answer
        assert all(normalize_answer(_wrong(answer, rng)) != answer for _ in range(5)), answer


def test_answer_balance() -> None:
    rng = np.random.default_rng(1)
    answers: dict[str, Counter] = {f: Counter() for f in FAMILIES}
    for _ in range(250):
        scene = sample_scene(rng, min_objects=3, max_objects=7, max_distractors=3, width=480, height=320)
        for q in generate_questions(scene, 6, rng):
            answers[q.family][q.answer] += 1
    for family in ("exist", "compare_attribute"):
        assert 0.4 < answers[family]["yes"] / sum(answers[family].values()) < 0.6, family
    overall = sum(answers.values(), Counter())
    assert overall.most_common(1)[0][1] / sum(overall.values()) < 0.3
    assert min(sum(c.values()) for c in answers.values()) > 200  # every family is represented


def test_features_linear_probe_colour_but_not_position() -> None:
    cfg = SynthVqaConfig()
    protos, rng = make_prototypes(cfg.seed, cfg.feature_dim), np.random.default_rng(2)
    feats, colours, cx = [], [], []
    for _ in range(500):
        scene = sample_scene(rng, min_objects=3, max_objects=7, max_distractors=3, width=480, height=320)
        x = region_features(scene, protos, cfg.feature_noise, rng)
        for i, o in enumerate(scene.objects):
            feats.append(x[o.region])
            colours.append(COLORS.index(o.color))
            cx.append(scene.centre(i)[0])
    X = np.hstack([np.asarray(feats, dtype=np.float64), np.ones((len(feats), 1))])
    y, cx = np.asarray(colours), np.asarray(cx)
    cut = int(0.75 * len(y))
    w = np.linalg.lstsq(X[:cut], np.eye(len(COLORS))[y[:cut]], rcond=None)[0]
    assert (np.argmax(X[cut:] @ w, axis=1) == y[cut:]).mean() > 0.9
    w = np.linalg.lstsq(X[:cut], cx[:cut], rcond=None)[0]
    r2 = 1 - np.var(cx[cut:] - X[cut:] @ w) / np.var(cx[cut:])
    assert r2 < 0.1  # the box centre is not linearly recoverable from the feature
