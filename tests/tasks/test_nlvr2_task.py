"""The nlvr2 task: two rows per example, one logit per example, the official metric and test_predict.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import count_samples, make_loader
from nas.errors import UserError
from nas.features_tsv import ObjRecord, write_obj_tsv
from nas.task import TaskMeta
from tasks.nlvr2.dataset import Nlvr2Dataset
from tasks.nlvr2.predictions import read_predictions
from tasks.nlvr2.task import Nlvr2Config, Nlvr2Task

SENTENCES = ["The left image contains a red cube.", "Both images contain a sphere."]
FEATURE_FILES = {"train": "train_obj36.tsv", "dev": "valid_obj36.tsv", "test1": "test_obj36.tsv"}


def write_nlvr2(root: Path) -> None:
    """Two sets per split, two pairs per set, each set's sentence labelled for both pairs."""
    (root / "data").mkdir(parents=True)
    (root / "nlvr2_imgfeat").mkdir()
    rng = np.random.default_rng(0)
    for split, file in FEATURE_FILES.items():
        lines, records = [], []
        for set_id in (3, 7):
            for pair in (0, 1):
                label = "True" if (set_id + pair) % 2 else "False"
                lines.append(json.dumps({"identifier": f"{split}-{set_id}-{pair}-0",
                                         "sentence": SENTENCES[set_id == 7], "label": label}))
                for side in (0, 1):
                    count = 2 + len(records) % 4  # images differ in region count
                    corner = rng.uniform(0, 100, (count, 2)).astype(np.float32)
                    features = rng.standard_normal((count, 8)).astype(np.float32)
                    features[:, 0] = len(records)  # each image's own marker in feature 0
                    records.append(ObjRecord(img_id=f"{split}-{set_id}-{pair}-img{side}", img_h=200, img_w=300,
                                             boxes=np.concatenate([corner, corner + 20], 1), features=features))
        (root / "data" / f"{split}.json").write_text("\n".join(lines) + "\n")
        write_obj_tsv(root / "nlvr2_imgfeat" / file, records)


def make_task(tmp_path: Path, **options) -> Nlvr2Task:
    write_nlvr2(tmp_path / "nlvr2")
    (tmp_path / "run").mkdir()
    config = Nlvr2Config(data_dir=str(tmp_path / "nlvr2"), cache_dir=str(tmp_path / "cache"), **options)
    return Nlvr2Task(config, tmp_path / "run", progress=False)


def test_a_batch_holds_each_example_as_left_and_right_rows(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    data = task.prepare(["train", "dev", "test1"])
    assert data.meta.num_outputs == 1 and data.meta.feature_dim == 8
    train = data.splits["train"]
    batch = train.__getitems__([2, 0])
    assert batch["tokens"].shape[0] == 4 and count_samples(batch) == 2
    assert [task._names[n] for n in batch["example"].tolist()] == ["train-7-0-0", "train-3-0-0"]
    # Rows: example 2's left and right image, then example 0's (markers 4, 5, 0, 1 in feature 0).
    assert batch["features"][:, 0, 0].tolist() == [4.0, 5.0, 0.0, 1.0]
    assert torch.equal(batch["tokens"][0], batch["tokens"][1]) and not torch.equal(batch["tokens"][1],
                                                                                    batch["tokens"][2])
    assert batch["num_regions"].tolist() == [2, 3, 2, 3] and batch["features"].shape[1] == 3
    assert batch["label"].tolist() == [1.0, 1.0]  # train-7-0-0 and train-3-0-0 are "True"
    assert train.lengths().tolist() == [3, 5, 3, 5]  # the fuller image of each pair
    swapped = Nlvr2Dataset("train", train.numbers.numpy(), train.tokens.numpy(), train.features,
                           train.rows[:, 1], train.rows[:, 0], train.labels.numpy().astype(bool))
    assert swapped.__getitems__([2, 0])["features"][:, 0, 0].tolist() == [5.0, 4.0, 1.0, 0.0]
    assert "label" not in Nlvr2Dataset("x", train.numbers.numpy(), train.tokens.numpy(), train.features,
                                       train.rows[:, 0], train.rows[:, 1], None).__getitems__([0])
    # Ranks and length grouping slice examples, never the two rows of one pair.
    loader = make_loader(train, batch_size=2, shuffle=True, seed=0, group_by_length=True)
    seen = [n for b in loader for n in b["example"].tolist()]
    assert sorted(seen) == sorted(train.numbers.tolist()) and all(len(b["tokens"]) == 4 for b in loader)


def test_the_head_joins_each_pair_in_order_and_the_loss_is_per_example(tmp_path: Path) -> None:
    task = make_task(tmp_path, dropout=0.0)
    head = task.build_head(16, TaskMeta(vocab_size=10, feature_dim=8, num_outputs=1)).eval()
    torch.manual_seed(0)
    text, image = torch.randn(4, 5, 16), torch.randn(4, 3, 16)
    text_keep, image_keep = torch.ones(4, 5, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool)
    with torch.no_grad():
        logits = head(text, text_keep, image, image_keep)
        again = head(text, text_keep, image + (torch.arange(4) >= 2).view(4, 1, 1), image_keep)  # example 1 only
        swapped = head(text[[1, 0, 2, 3]], text_keep, image[[1, 0, 2, 3]], image_keep)  # example 0's images swapped
    assert logits.shape == (2,)
    assert again[0] == logits[0] and again[1] != logits[1]
    assert swapped[0] != logits[0] and swapped[1] == logits[1]  # left and right are not interchangeable
    with pytest.raises(ValueError, match="two rows per example"):
        head(text[:3], text_keep[:3], image[:3], image_keep[:3])
    label = torch.tensor([1.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(logits[0], label[0]) + F.binary_cross_entropy_with_logits(
        logits[1], label[1])
    assert task.loss(logits, {"label": label}) == pytest.approx(float(expected))


def test_accuracy_and_consistency_match_hand_computed_values(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    dev = task.prepare(["dev"]).splits["dev"]
    truth = {i: task.examples[i].label for i in task._identifiers(dev)}
    assert truth == {"dev-3-0-0": True, "dev-3-1-0": False, "dev-7-0-0": True, "dev-7-1-0": False}
    predictions = [{"identifier": i, "label": label} for i, label in truth.items()]
    predictions[1]["label"] = True  # set 3's sentence is now wrong on one pair: 3 of 4, 1 of 2 sentences
    metrics = task.evaluate("dev", dev, predictions)
    assert metrics["accuracy"] == 75.0 and metrics["consistency"] == 50.0 and metrics["num_sentences"] == 2
    assert task.format_metrics(metrics) == "accuracy=75.00 consistency=50.00"
    baseline = task.baseline(task.prepare(["train"]).splits["train"], "dev", dev)
    assert baseline["accuracy"] == 50.0 and baseline["consistency"] == 0.0
    numbers = torch.tensor([task._numbers["dev-3-0-0"], task._numbers["dev-7-1-0"]])
    assert task.predict(torch.tensor([0.5, -0.5]), {"example": numbers}) == [
        {"identifier": "dev-3-0-0", "label": True}, {"identifier": "dev-7-1-0", "label": False}]


def test_test_predict_csv_covers_the_split_or_is_refused(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    test = task.prepare(["test1"]).splits["test1"]
    ids = task._identifiers(test)
    predictions = [{"identifier": i, "label": n % 2 == 0} for n, i in enumerate(ids)]
    path = task.write_results(predictions, tmp_path / "results" / "nlvr2_test1_results.json", test)
    assert path == tmp_path / "results" / "test_predict.csv"
    assert path.read_text().splitlines() == [f"{i},{'True' if n % 2 == 0 else 'False'}" for n, i in enumerate(ids)]
    assert read_predictions(path) == {p["identifier"]: p["label"] for p in predictions}
    with pytest.raises(UserError, match="predictions are missing for 1 of 4"):
        task.write_results(predictions[1:], tmp_path / "half" / "x.json", test)
    assert not (tmp_path / "half" / "test_predict.csv").exists()


def test_missing_images_unknown_splits_and_max_images(tmp_path: Path) -> None:
    task = make_task(tmp_path, max_images=2)
    dev = task.prepare(["dev"]).splits["dev"]
    assert task._identifiers(dev) == ["dev-3-0-0"] and task.truncated == {"dev"}
    with pytest.raises(UserError, match="unknown NLVR2 split 'val'"):
        task.prepare(["val"])
    with pytest.raises(UserError, match="does not join splits"):
        task.prepare(["train+dev"])
    path = tmp_path / "nlvr2" / "data" / "test1.json"
    path.write_text(path.read_text().replace("test1-3-0-0", "test1-9-0-0"))
    with pytest.raises(UserError, match=r"test_obj36.tsv: no features for image 'test1-9-0-img0'"):
        Nlvr2Task(Nlvr2Config(data_dir=str(tmp_path / "nlvr2"), cache_dir=str(tmp_path / "cache")),
                  tmp_path / "run", progress=False).prepare(["test1"])
    with pytest.raises(UserError, match=r"task.max_images=0: must be at least 1"):
        Nlvr2Task(Nlvr2Config(max_images=0), tmp_path, progress=False)
    with pytest.raises(UserError, match=r"task.fusion: unknown value 'concat'. Valid: sum, product"):
        Nlvr2Task(Nlvr2Config(fusion="concat"), tmp_path, progress=False)


def test_search_retrain_and_evaluate_on_the_builtin_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli.main import main

    data = tmp_path / "data"
    assert main(["data", "synth", "--task", "nlvr2", "--out", str(data), "--quiet", "train_sets=16", "dev_sets=6",
                 "test1_sets=6", "feature_dim=16"]) == 0
    smoke = ["--config", "smoke", "--quiet", "--data", str(data), f"task.cache_dir={tmp_path / 'cache'}"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "nlvr2", "--out", str(search), *smoke]) == 0
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    assert json.loads((search / "genotype.json").read_text())["task"] == "nlvr2"
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *smoke,
                 "train.epochs=1"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["test_split"] == "test1" and summary["results_file"] == str(retrain / "results" /
                                                                               "test_predict.csv")
    assert summary["baseline"]["accuracy"] == 50.0  # every sentence is true for half of its pairs
    lines = Path(summary["results_file"]).read_text().splitlines()
    assert len(lines) == 6 * 4 * 2 and all(line.rsplit(",", 1)[1] in ("True", "False") for line in lines)
    capsys.readouterr()
    assert main(["evaluate", "--task", "nlvr2", "--json", "--nlvr2-json", str(data / "data" / "test1.json"),
                 "--predict-csv", summary["results_file"]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert scores["consistency"] == pytest.approx(summary["test"]["consistency"])
    assert scores["num_examples"] == 48 and scores["num_sentences"] == 12
