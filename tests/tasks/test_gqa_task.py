"""The gqa task reads GQA question files and LXMERT TSV features, scores with GQA's metric, writes submissions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.features_tsv import ObjRecord, write_obj_tsv
from tasks.gqa.task import GqaConfig, GqaTask

ANSWERS = ["yes", "no", "red", "two"]


def write_gqa(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "questions").mkdir(parents=True)
    (root / "vg_gqa_imgfeat").mkdir()
    images = {"train": ["n1", "n2", "n3", "n4"], "val": ["n5", "n6"], "testdev": ["n7", "n8"]}
    qid = 100
    for split, names in images.items():
        questions = {}
        for name in names:
            for k in range(3):
                qid += 1
                questions[str(qid)] = {"imageId": name, "question": f"is the thing number {k} there?",
                                       "answer": ANSWERS[(qid + k) % 4], "isBalanced": qid % 5 != 0,
                                       "types": {"structural": "verify" if k else "query"}, "entailed": []}
        (root / "questions" / f"{split}_balanced_questions.json").write_text(json.dumps(questions))
    records = {file: [] for file in ("vg_gqa_obj36.tsv", "gqa_testdev_obj36.tsv")}
    for split, names in images.items():
        file = "gqa_testdev_obj36.tsv" if split == "testdev" else "vg_gqa_obj36.tsv"
        for name in names:
            count = 3 + len(records[file]) % 3
            corner = rng.uniform(0, 100, (count, 2)).astype(np.float32)
            records[file].append(ObjRecord(img_id=name, img_h=200, img_w=300,
                                           boxes=np.concatenate([corner, corner + 20], 1),
                                           features=rng.standard_normal((count, 8), dtype=np.float32)))
    for file, made in records.items():
        write_obj_tsv(root / "vg_gqa_imgfeat" / file, made)


def make_task(tmp_path: Path, **options) -> GqaTask:
    write_gqa(tmp_path / "gqa")
    config = GqaConfig(data_dir=str(tmp_path / "gqa"), cache_dir=str(tmp_path / "cache"), **options)
    return GqaTask(config, tmp_path / "run", progress=False)


def test_splits_load_with_named_images_one_hot_targets_and_the_official_metric(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    task = make_task(tmp_path)
    data = task.prepare(["train", "val", "testdev"])
    assert data.meta.feature_dim == 8 and data.meta.num_outputs == len(task.answers) == 4
    train = data.splits["train"]
    batch = train.__getitems__(list(range(len(train))))
    assert len(train) == 12 and batch["target"].sum(1).tolist() == [1.0] * 12
    assert batch["features"].shape[1] == int(batch["num_regions"].max())
    val = data.splits["val"]
    truth = [{"question_id": q, "answer": task.questions[q].answer} for q in task._names if task.questions[q].image_id
             in ("n5", "n6")]
    metrics = task.evaluate("val", val, truth)
    assert metrics["accuracy"] == 100.0 and metrics["questions"] == sum(task.questions[p["question_id"]].balanced
                                                                        for p in truth)
    wrong = [{**p, "answer": "blue"} if i == 0 else p for i, p in enumerate(truth)]
    assert task.evaluate("val", val, wrong)["accuracy"] < 100.0
    baseline = task.baseline(train, "val", val)
    assert baseline["answer"] in ANSWERS and 0 <= baseline["accuracy"] <= 100


def test_the_submission_covers_every_testdev_question_or_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    task = make_task(tmp_path)
    testdev = task.prepare(["testdev"]).splits["testdev"]
    ids = [task._question_id(n) for n in testdev.question_ids.tolist()]
    path = task.write_results([{"question_id": q, "answer": "yes"} for q in ids], tmp_path / "submit.json", testdev)
    assert [item["questionId"] for item in json.loads(path.read_text())] == ids
    with pytest.raises(UserError, match="incomplete submission"):
        task.write_results([{"question_id": q, "answer": "yes"} for q in ids[1:]], tmp_path / "half.json", testdev)
    assert not (tmp_path / "half.json").exists()


def test_missing_features_and_unknown_splits_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    task = make_task(tmp_path)
    with pytest.raises(UserError, match="unknown GQA split 'test'"):
        task.prepare(["test"])
    path = tmp_path / "gqa" / "questions" / "val_balanced_questions.json"
    questions = json.loads(path.read_text())
    next(iter(questions.values()))["imageId"] = "n99"
    path.write_text(json.dumps(questions))
    with pytest.raises(UserError, match="vg_gqa_obj36.tsv: no features for image 'n99'"):
        task.prepare(["val"])


def test_search_retrain_and_evaluate_on_the_builtin_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli.main import main

    smoke = ["--config", "smoke", "--quiet", "task.synth_size=tiny", f"task.cache_dir={tmp_path / 'cache'}"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "gqa", "--out", str(search), *smoke]) == 0
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *smoke,
                 "train.epochs=1"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["test_split"] == "testdev" and summary["results_file"].endswith("gqa_testdev_results.json")
    capsys.readouterr()
    questions = Path(summary["data_dir"]) / "questions" / "testdev_balanced_questions.json"
    assert main(["evaluate", "--task", "gqa", "--json", "--balanced-questions", str(questions),
                 "--submission", summary["results_file"]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=0.005)
    submitted = json.loads(Path(summary["results_file"]).read_text())
    assert len(submitted) == len(json.loads(questions.read_text()))  # every testdev question, balanced or not
