"""The built-in caption data: COCO captions of the built-in VQA images (and a Flickr30K layout)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.errors import UserError
from nas.features import index_feature_files, load_region_features
from nas.synth import SynthCaptionConfig, generate_caption, generate_vqa
from nas.synth import caption_writer
from nas.synth.expressions import CAPTION_KINDS, NUMBER_WORDS, WORDS
from nas.synth.world import COLORS, SHAPES
from tasks.caption.references import read_image_info, read_references

TINY = SynthCaptionConfig(seed=2, train_images=6, val_images=3, test_images=2, feature_dim=16)
FLICKR = replace(TINY, layout="flickr30k")
SUBTYPES = {"train": "train2014", "val": "val2014", "test": "test2015"}
_SHAPE_OF = {word: shape for shape in SHAPES for word in WORDS[shape]}


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caption") / "coco"
    generate_caption(root, TINY, progress=False)
    return root


@pytest.fixture(scope="module")
def flickr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caption") / "flickr30k"
    generate_caption(root, FLICKR, progress=False)
    return root


def _json(path: Path):
    return json.loads(path.read_text())


def test_coco_layout_keys_and_counts(coco: Path) -> None:
    files = caption_writer.caption_files(coco, "coco")
    next_ids = []
    for split in ("train", "val"):
        data = _json(files[split])
        assert set(data) == {"info", "licenses", "images", "annotations"}
        n = getattr(TINY, f"{split}_images")
        assert len(data["images"]) == n and len(data["annotations"]) == 5 * n
        for image in data["images"]:
            assert set(image) == {"id", "file_name", "height", "width"}
            assert image["file_name"] == f"COCO_{SUBTYPES[split]}_{image['id']:012d}.jpg"
            assert (image["height"], image["width"]) == (320, 480)
        assert all(set(a) == {"id", "image_id", "caption"} for a in data["annotations"])
        assert set(Counter(a["image_id"] for a in data["annotations"]).values()) == {5}
        next_ids += [a["id"] for a in data["annotations"]]
    assert sorted(next_ids) == list(range(1, 5 * 9 + 1))  # unique across splits, as COCO's are
    test = _json(files["test"])
    assert set(test) == {"info", "licenses", "images"}  # COCO's test image info: no captions
    assert [i["file_name"][:14] for i in test["images"]] == ["COCO_test2015_"] * 2
    meta = _json(coco / "synth_meta.json")
    assert (meta["generator"], meta["version"], meta["layout"]) == ("vlnas-synth-caption", 1, "coco")
    assert meta["config"] == json.loads(json.dumps(TINY.__dict__))
    assert set(meta["caption_kinds"]) == {str(i) for i in next_ids}
    assert set(meta["caption_kinds"].values()) <= set(CAPTION_KINDS)
    assert sum(meta["kind_counts"].values()) == 45
    assert meta["summary"]["num_captions"] == {"train": 30, "val": 15}
    assert meta["families"]  # the VQA meta is kept, so the VQA task reads this folder too
    assert not [p for p in coco.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_caption_images_are_the_vqa_and_feature_images(coco: Path, tmp_path: Path) -> None:
    files = caption_writer.caption_files(coco, "coco")
    for split, subtype in SUBTYPES.items():
        questions = _json(coco / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json")["questions"]
        images = read_image_info(files[split])
        assert sorted(images) == images  # ascending, as the VQA writer's ids
        assert set(images) == {q["image_id"] for q in questions}
        assert set(index_feature_files(caption_writer.feature_dir(coco, "coco", split))) == set(images)
    # the VQA part is exactly generate_vqa's output for the same images
    vqa = tmp_path / "vqa"
    generate_vqa(vqa, TINY.vqa_config(), progress=False)
    for path in (vqa / "vqa").iterdir():
        assert (coco / "vqa" / path.name).read_bytes() == path.read_bytes(), path.name
    one = next((vqa / "coco_extract" / "val2014").iterdir())
    with np.load(one) as a, np.load(coco / "coco_extract" / "val2014" / one.name) as b:
        assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["bbox"], b["bbox"])


def test_captions_describe_their_scene(coco: Path, flickr: Path) -> None:
    checked = 0
    for root, splits in ((coco, ("train", "val")), (flickr, ("train", "val", "test"))):
        meta = _json(root / "synth_meta.json")
        for split in splits:
            references = read_references(caption_writer.caption_files(root, meta["layout"])[split])
            for image_id, captions in references.captions.items():
                objects = meta["scenes"][str(image_id)]["objects"]
                colours, shapes = {o["color"] for o in objects}, Counter(o["shape"] for o in objects)
                for caption in captions:
                    assert caption[0].isupper() and caption.endswith(".")
                    words = re.findall(r"[a-z]+", caption.lower())
                    assert {w for w in words if w in COLORS} <= colours, caption
                    named = {_SHAPE_OF[w.removesuffix("s")] for w in words if w.removesuffix("s") in _SHAPE_OF}
                    assert named <= set(shapes), caption
                    if words[1] == "objects":  # census: "Five objects including ..."
                        assert words[0] == NUMBER_WORDS[len(objects)], caption
                    elif words[0] in NUMBER_WORDS and words[1].endswith("s"):  # "Two cubes and ..."
                        assert shapes[_SHAPE_OF[words[1][:-1]]] == NUMBER_WORDS.index(words[0]), caption
                    checked += 1
    assert checked == 5 * (9 + 11)


def test_deterministic_and_seed_dependent(tmp_path: Path, coco: Path) -> None:
    again = tmp_path / "again"
    generate_caption(again, TINY, progress=False)
    names = sorted(str(p.relative_to(coco)) for p in coco.rglob("*.json"))
    assert names == sorted(str(p.relative_to(again)) for p in again.rglob("*.json")) and len(names) == 11
    for name in names:
        assert (again / name).read_bytes() == (coco / name).read_bytes(), name
    other = tmp_path / "other"
    generate_caption(other, replace(TINY, seed=5), progress=False)
    path = "annotations/captions_train2014.json"
    assert (other / path).read_bytes() != (coco / path).read_bytes()


def test_crash_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = caption_writer.generate_captions

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(caption_writer, "generate_captions", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_caption(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_flickr30k_layout_and_its_features(flickr: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in flickr.iterdir()) == ["flickr30k", "synth_meta.json"]  # no VQA files
    files = caption_writer.caption_files(flickr, "flickr30k")
    seen = set()
    for split in ("train", "val", "test"):
        references = read_references(files[split])
        assert len(references) == getattr(FLICKR, f"{split}_images")
        assert all(len(c) == 5 for c in references.captions.values())
        assert all(references.file_names[i] == f"{i}.jpg" and 10**7 <= i < 4 * 10**9 for i in references.image_ids)
        folder = caption_writer.feature_dir(flickr, "flickr30k", split)
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.jpg.npz" for i in references.image_ids)
        # the shared feature reader finds the image id in "<id>.jpg.npz" as it does in COCO names
        features = load_region_features(folder, references.image_ids, max_regions=12, cache_root=tmp_path,
                                        progress=False)
        assert features.feature_dim == 16 and set(features.row_of) == set(references.image_ids)
        seen |= set(references.image_ids)
    assert len(seen) == 11
    meta = _json(flickr / "synth_meta.json")
    assert meta["summary"]["num_captions"] == {"train": 30, "val": 15, "test": 10}
    assert meta["summary"]["num_questions"] == {} and set(meta["scenes"]) == {str(i) for i in seen}


def test_bad_config_names_the_field() -> None:
    with pytest.raises(UserError, match=r"^SynthCaptionConfig.layout='coco2014': must be one of coco, flickr30k$"):
        SynthCaptionConfig(layout="coco2014")
    with pytest.raises(UserError, match=r"^SynthCaptionConfig.captions_per_image=0: must be in 1..10$"):
        SynthCaptionConfig(captions_per_image=0)
    with pytest.raises(UserError, match=r"^SynthCaptionConfig.val_images=0: must be >= 1$"):
        SynthCaptionConfig(val_images=0)


def test_cli_and_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "caption"
    argv = ["data", "synth", "--task", "caption", "--out", str(out), "--quiet", "--seed", "2", "train_images=3",
            "val_images=2", "test_images=1", "feature_dim=16", "captions_per_image=3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "num_captions: train 9, val 6" in printed and "num_questions: train 18" in printed
    assert len(read_references(out / "annotations" / "captions_val2014.json").captions) == 2
    monkeypatch.setattr(caption_writer, "_build", lambda *a: pytest.fail("regenerated a complete dataset"))
    assert main(argv) == 0  # the same config is recognised and reused
    assert main(["data", "synth", "--task", "caption", "--out", str(out), "layout=flickr"]) == 2
    assert "SynthCaptionConfig.layout='flickr': must be one of coco, flickr30k" in capsys.readouterr().err
