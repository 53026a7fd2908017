"""Tests for the synthetic GQA generator: files the GQA readers load, programs that compute the
answers from the scene, record fields, determinism and safety."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.errors import UserError
from nas.features_tsv import load_tsv_features, read_obj_tsv
from nas.synth import FAMILIES, SynthGqaConfig, generate_gqa
from nas.synth import gqa_writer
from nas.synth.features import ATTRIBUTE_CLASSES, OBJECT_CLASSES
from nas.synth.vqa_questions import NEAREST_RATIO, relation_holds
from nas.synth.world import Scene, SceneObject
from tasks.gqa.questions import GqaQuestion, load_questions

TINY = SynthGqaConfig(seed=3, train_images=10, val_images=4, testdev_images=4, feature_dim=32)
SPLITS = ("train", "val", "testdev")
TSV = {"train": "vg_gqa_obj36.tsv", "val": "vg_gqa_obj36.tsv", "testdev": "gqa_testdev_obj36.tsv"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "gqa"
    generate_gqa(root, TINY, progress=False)
    return root


def _raw(root: Path, split: str) -> dict:
    return json.loads((root / "questions" / f"{split}_balanced_questions.json").read_text())


def _scenes(root: Path) -> dict[str, Scene]:
    """Every image's scene, rebuilt from synth_meta.json and the boxes in the TSVs."""
    meta = json.loads((root / "synth_meta.json").read_text())
    out = {}
    for name in set(TSV.values()):
        for rec in read_obj_tsv(root / "vg_gqa_imgfeat" / name):
            objects = tuple(SceneObject(**o) for o in meta["scenes"][rec.img_id]["objects"])
            out[rec.img_id] = Scene(rec.img_w, rec.img_h, objects, (), tuple(map(tuple, rec.boxes.tolist())))
    return out


def _execute(question: GqaQuestion, scene: Scene) -> str:
    """Run a program on a scene, independently of the writer: the answer it must have."""
    values: list = []
    for step in question.program:
        deps = [values[d] for d in step.dependencies]
        op, arg = step.operation, step.argument
        if op == "select":
            values.append([i for i, o in enumerate(scene.objects) if arg in ("thing", o.shape)])
        elif op.startswith("filter "):
            values.append([i for i in deps[0] if scene.objects[i].attr(op.split()[1]) == arg])
        elif op == "exist":
            values.append("yes" if deps[0] else "no")
        elif op == "count":
            values.append(str(len(deps[0])))
        elif op == "query":
            assert len(deps[0]) == 1, question
            values.append(scene.objects[deps[0][0]].attr(arg))
        elif op.startswith("same "):
            (a,), (b,) = deps
            values.append("yes" if scene.objects[a].attr(op.split()[1]) == scene.objects[b].attr(op.split()[1])
                          else "no")
        elif op == "verify rel":
            (a,), (b,) = deps
            values.append("yes" if relation_holds(scene, a, arg, b) else "no")
        elif op == "relate":
            (b,) = deps[0]
            others = [a for a in range(len(scene.objects)) if a != b]
            if arg == "nearest to":
                dist = sorted((np.hypot(*np.subtract(scene.centre(a), scene.centre(b))), a) for a in others)
                assert len(dist) < 2 or dist[1][0] >= NEAREST_RATIO * dist[0][0]
                values.append([dist[0][1]])
            else:
                values.append([a for a in others if relation_holds(scene, a, arg, b)])
        else:
            raise AssertionError(f"unknown operation {op}")
    return values[-1]


def test_layout_loads_with_the_gqa_readers(dataset: Path, tmp_path: Path) -> None:
    assert sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file()) == [
        "questions/testdev_balanced_questions.json", "questions/train_balanced_questions.json",
        "questions/val_balanced_questions.json", "synth_meta.json", "vg_gqa_imgfeat/gqa_testdev_obj36.tsv",
        "vg_gqa_imgfeat/vg_gqa_obj36.tsv"]
    meta = json.loads((dataset / "synth_meta.json").read_text())
    features = {name: load_tsv_features(dataset / "vg_gqa_imgfeat" / name, 100, tmp_path, progress=False)
                for name in set(TSV.values())}
    assert len(features["vg_gqa_obj36.tsv"].image_ids) == TINY.train_images + TINY.val_images
    assert len(features["gqa_testdev_obj36.tsv"].image_ids) == TINY.testdev_images
    seen_ids: set[str] = set()
    for split in SPLITS:
        questions = load_questions(dataset / "questions" / f"{split}_balanced_questions.json")
        assert len(questions) >= getattr(TINY, f"{split}_images") * TINY.questions_per_image
        assert not seen_ids & set(questions)  # question ids unique across splits
        seen_ids |= set(questions)
        feats = features[TSV[split]]
        images = {q.image_id for q in questions.values()}
        assert len(images) == getattr(TINY, f"{split}_images")
        for image_id in images:
            assert re.fullmatch(r"n\d{7}", image_id)
            row = feats.row_of[image_id]  # the imageId is the TSV img_id
            scene = meta["scenes"][image_id]
            assert feats.num_regions[row] == len(scene["objects"]) + len(scene["distractors"])
            boxes = feats.boxes[row, :feats.num_regions[row]]
            assert boxes.max() > 1.5 and (boxes[:, 2] <= TINY.image_width).all()  # pixels, not 0-1
        assert all(q.answer is not None for q in questions.values())  # testdev is labelled too
    assert set(meta["families"]) == seen_ids and set(meta["families"].values()) == set(FAMILIES)


def test_programs_compute_the_answers_from_the_scene(dataset: Path) -> None:
    scenes = _scenes(dataset)
    for split in SPLITS:
        for q in load_questions(dataset / "questions" / f"{split}_balanced_questions.json").values():
            assert all(0 <= d < i for i, step in enumerate(q.program) for d in step.dependencies)
            used = {d for step in q.program for d in step.dependencies}
            assert used == set(range(len(q.program) - 1)), q  # one tree: every step feeds the answer
            assert _execute(q, scenes[q.image_id]) == q.answer, q


def test_the_label_columns_name_each_regions_class_and_colour(dataset: Path) -> None:
    meta = json.loads((dataset / "synth_meta.json").read_text())
    for name in set(TSV.values()):
        for row in read_obj_tsv(dataset / "vg_gqa_imgfeat" / name):
            scene = meta["scenes"][row.img_id]
            for obj in scene["objects"]:
                assert OBJECT_CLASSES[row.objects_id[obj["region"]]] == obj["shape"]
                assert ATTRIBUTE_CLASSES[row.attrs_id[obj["region"]]] == obj["color"]
            for extra in scene["distractors"]:
                assert OBJECT_CLASSES[row.objects_id[extra["region"]]] == extra["kind"]
                assert (row.attrs_conf[extra["region"]] == 0) == (extra["kind"] == "background")


def test_record_fields(dataset: Path) -> None:
    meta = json.loads((dataset / "synth_meta.json").read_text())
    entailing = 0
    for split in SPLITS:
        raw = _raw(dataset, split)
        for qid, r in raw.items():
            binary = r["answer"] in ("yes", "no")
            family = meta["families"][qid]
            assert (r["types"]["structural"] == "query") == (not binary), r
            assert r["types"]["structural"] == {"exist": "verify", "compare_attribute": "compare"}.get(
                family, "verify" if binary else "query")
            assert set(r["types"]) == {"structural", "semantic", "detailed"}
            assert set(r["groups"]) == {"global", "local"} and (r["groups"]["global"] is None) == binary
            assert r["equivalent"] == [qid] and r["fullAnswer"].endswith(".")
            assert r["annotations"] == {"question": {}, "answer": {}, "fullAnswer": {}}
            for other in r["entailed"]:  # same image, and an answer that follows (exist/count)
                assert other != qid and raw[other]["imageId"] == r["imageId"]
                assert meta["families"][other] in ("exist", "count")
                if family == "query_attribute" or r["answer"] not in ("0", "no"):
                    assert raw[other]["answer"] == "yes"
                else:  # nothing matches, so nothing stricter does either
                    assert raw[other]["answer"] in ("0", "no")
            entailing += bool(r["entailed"])
    assert entailing > 0


def test_unbalanced_share(dataset: Path) -> None:
    for split in SPLITS:
        raw = _raw(dataset, split)
        assert sum(not r["isBalanced"] for r in raw.values()) == round(TINY.unbalanced_share * len(raw))


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cfg = replace(TINY, train_images=3, val_images=2, testdev_images=2)
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (5, 5, 6)):
        generate_gqa(root, replace(cfg, seed=seed), progress=False)
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    for rel in files:
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes(), rel
        assert (roots[0] / rel).read_bytes() != (roots[2] / rel).read_bytes(), rel


def test_crash_mid_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = gqa_writer.region_features

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(gqa_writer, "region_features", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_gqa(tmp_path / "ds", TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_directory_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a vlnas synthetic dataset"):
        generate_gqa(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="unbalanced_share"):
        SynthGqaConfig(unbalanced_share=1.0)
    with pytest.raises(UserError, match="questions_per_image"):
        SynthGqaConfig(questions_per_image=50)


def test_cli_and_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "gqa"
    argv = ["data", "synth", "--task", "gqa", "--out", str(out), "--quiet", "--seed", "2", "train_images=2",
            "val_images=1", "testdev_images=1", "feature_dim=16"]
    assert main(argv) == 0
    assert "num_questions" in capsys.readouterr().out
    monkeypatch.setattr(gqa_writer, "_build", lambda *a: pytest.fail("regenerated a complete dataset"))
    assert main(argv) == 0  # the same config is recognised and reused
