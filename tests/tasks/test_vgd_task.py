import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli.main import main
from nas.errors import UserError
from tasks.vgd.boxes import decode_deltas, encode_deltas
from tasks.vgd.task import VgdConfig, VgdTask

SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]


def test_box_deltas_round_trip() -> None:
    proposals = np.array([[10, 20, 49, 79], [0, 0, 9, 9]], np.float32)
    targets = np.array([[12, 18, 60, 70], [3, 1, 30, 12]], np.float32)
    deltas = encode_deltas(proposals, targets)
    decoded = decode_deltas(proposals, deltas, np.array([200.0, 200.0]), np.array([300.0, 300.0]))
    np.testing.assert_allclose(decoded, targets, atol=1e-3)
    assert np.allclose(encode_deltas(targets, targets), 0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    task = VgdTask(VgdConfig(synth_size="tiny"), tmp_path_factory.mktemp("vgd"), progress=False)
    return task, task.prepare(["train", "val"])


def test_loader_targets_follow_the_released_files(prepared) -> None:
    task, data = prepared
    root = Path(data.info["data_dir"])
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    boxes = {a["id"]: a["bbox"] for a in instances["annotations"]}
    from nas.safe_pickle import load_plain_pickle

    refs = [r for r in load_plain_pickle(root / "refcoco" / "refs(unc).p", "refs") if r["split"] == "val"]
    val = data.splits["val"]
    assert len(val) == sum(len(r["sentences"]) for r in refs)
    first = refs[0]
    x, y, w, h = boxes[first["ann_id"]]
    batch = val.__getitems__([0])
    assert int(batch["sent_id"][0]) == first["sentences"][0]["sent_id"]
    np.testing.assert_allclose(batch["target_box"][0].numpy(), [x, y, x + w, y + h], rtol=1e-6)
    # KL targets: positives (IoU >= 0.5) only, normalised to one.
    assert batch["positive"][0].any()
    assert batch["target_scores"][0].sum().item() == pytest.approx(1.0)
    assert torch.all(batch["target_scores"][0][~batch["positive"][0]] == 0)


def test_loss_and_prediction(prepared) -> None:
    task, data = prepared
    batch = data.splits["train"].__getitems__([0, 1, 2])
    n = batch["boxes"].shape[1]
    scores = torch.zeros(3, n, requires_grad=True)
    deltas = torch.zeros(3, n, 4, requires_grad=True)
    loss = task.loss((scores, deltas), batch)
    loss.backward()
    assert loss.item() > 0 and scores.grad.abs().sum() > 0
    # Scoring the best positive highest, with exact deltas, predicts the target box.
    best = (batch["target_scores"]).argmax(1)
    perfect = torch.full((3, n), -10.0)
    perfect[torch.arange(3), best] = 10.0
    predictions = task.predict((perfect, batch["target_deltas"]), batch)
    metrics = task.evaluate("train", data.splits["train"], predictions)
    assert metrics["accuracy"] == 100.0


def test_unknown_split_and_convention_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="task.iou_convention: unknown value 'coco'. Valid: mmnas, simrec"):
        VgdTask(VgdConfig(iou_convention="coco"), tmp_path)
    with pytest.raises(UserError, match="unknown refcoco split 'test'. Splits in the annotations: train"):
        VgdTask(VgdConfig(synth_size="tiny"), tmp_path).prepare(["test"])


def test_search_retrain_evaluate_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "vgd", "--out", str(search), *SMOKE]) == 0
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *SMOKE,
                 "train.epochs=1", "task.test_split=val"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    root = Path(summary["data_dir"]) / "refcoco"
    capsys.readouterr()
    assert main(["evaluate", "--task", "vgd", "--json", "--predictions", summary["results_file"], "--refs",
                 str(root / "refs(unc).p"), "--instances", str(root / "instances.json"), "--split", "val"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == pytest.approx(summary["final"]["accuracy"], abs=0.005)
    assert scores["num_expressions"] == summary["final"]["num_expressions"]


def test_simrec_annotations_give_the_same_targets(prepared, tmp_path: Path) -> None:
    task, data = prepared
    simrec = VgdTask(VgdConfig(synth_size="tiny", annotations="simrec"), tmp_path, progress=False)
    splits = simrec.prepare(["train", "val", "testA"]).splits
    val = splits["val"]
    ids = [int(i) for name in ("train", "val", "testA") for i in splits[name].sent_ids]
    assert len(ids) == len(set(ids))  # unique across splits, so targets never collide
    refer_val = data.splits["val"]
    # Non-train SimREC entries are one per sentence, in the refs' order.
    assert len(val) == len(refer_val)
    np.testing.assert_allclose(val.targets, refer_val.targets, rtol=1e-6)
    assert [e.text for e in val.expressions] == [e.text for e in refer_val.expressions]
