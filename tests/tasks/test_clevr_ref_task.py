"""The clevr_ref task on the built-in data: cell targets, baselines, and search -> retrain -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.rle import encode_rle
from tasks.clevr_ref.task import ClevrRefConfig, ClevrRefTask


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> ClevrRefTask:
    root = tmp_path_factory.mktemp("clevr_ref_task")
    (root / "run").mkdir()
    config = ClevrRefConfig(synth_size="tiny", cache_dir=str(root / "cache"))
    return ClevrRefTask(config, root / "run", progress=False)


def test_cells_carry_the_covered_share_and_exact_masks_score_100(task: ClevrRefTask) -> None:
    data = task.prepare(["train", "val"])
    val = data.splits["val"]
    assert data.meta.feature_dim == 16 and task.grid == (8, 8)
    batch = val.__getitems__(list(range(len(val))))
    assert batch["features"].shape == (len(val), 64, 16) and batch["boxes"].shape == (len(val), 64, 4)
    assert batch["num_regions"].tolist() == [64] * len(val)
    refexp = val.refexps[0]
    union = task.scenes["val"][refexp.image_index].union(list(refexp.output))
    # Cell (r, c) covers rows 40r..40r+40 and columns 60c..60c+60 of the 320 x 480 mask.
    expected = union.reshape(8, 40, 8, 60).mean(axis=(1, 3)).reshape(-1)
    np.testing.assert_allclose(batch["target"][0].numpy(), expected, atol=1e-6)

    exact = [{"refexp_index": r.index, "image_index": r.image_index, "box": [0, 0, 1, 1],
              "mask_rle": encode_rle(task.scenes["val"][r.image_index].union(list(r.output)))} for r in val.refexps]
    assert task.evaluate("val", val, exact)["cumulative_iou"] == 100.0
    baseline = task.baseline(data.splits["train"], "val", val)
    referred = sum(int(task.scenes["val"][r.image_index].union(list(r.output)).sum()) for r in val.refexps)
    everything = baseline["rules"]["all foreground"]
    assert everything["cumulative_iou"] == pytest.approx(100 * referred / (len(val) * 320 * 480), abs=1e-3)
    assert everything["accuracy"] < 50 and baseline["cumulative_iou"] == max(
        everything["cumulative_iou"], baseline["rules"]["centre box"]["cumulative_iou"])


def test_predictions_upsample_the_cell_logits(task: ClevrRefTask) -> None:
    val = task.prepare(["val"]).splits["val"]
    batch = val.__getitems__([0, 1])
    logits = torch.full((2, 64), -5.0)
    logits[0, 0] = 5.0  # the top-left cell of the first expression only
    first, second = task.predict(logits, batch)
    assert first["refexp_index"] == val.refexps[0].index and second["mask_rle"] == str(320 * 480)
    x, y, w, h = first["box"]
    assert x == 0 and y == 0 and 30 <= w <= 60 and 20 <= h <= 40  # about the cell's 60 x 40 pixels


def test_search_retrain_and_evaluate_on_the_builtin_data(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        one_thread: None) -> None:
    from nas.cli.main import main

    smoke = ["--config", "smoke", "--quiet", "task.synth_size=tiny", f"task.cache_dir={tmp_path / 'cache'}"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "clevr_ref", "--out", str(search), *smoke]) == 0
    assert json.loads((search / "genotype.json").read_text())["task"] == "clevr_ref"
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *smoke,
                 "train.epochs=1"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["test_split"] == "val" and summary["results_file"].endswith("clevr_ref_val_results.json")
    results = json.loads(Path(summary["results_file"]).read_text())
    root = Path(summary["data_dir"])
    refexps = root / "refexps" / "clevr_ref+_val_refexps.json"
    assert [r["refexp_index"] for r in results] == list(range(len(json.loads(refexps.read_text())["refexps"])))
    capsys.readouterr()
    assert main(["evaluate", "--task", "clevr_ref", "--json", "--refexps", str(refexps), "--scenes",
                 str(root / "scenes" / "clevr_ref+_val_scenes.json"), "--results", summary["results_file"]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["cumulative_iou"] == pytest.approx(summary["final"]["cumulative_iou"], abs=1e-4)
    assert scores["accuracy"] == pytest.approx(summary["final"]["accuracy"], abs=1e-4)


def test_the_loss_is_cell_bce_with_a_foreground_weight(tmp_path: Path) -> None:
    from nas.errors import UserError

    target = torch.tensor([[0.0, 0.5, 1.0, 1.0]])
    batch = {"target": target}
    for weight in (1.0, 3.0):
        task = ClevrRefTask(ClevrRefConfig(positive_weight=weight), tmp_path, progress=False)
        # At logit 0 each cell costs ln 2 * (weight * t + 1 - t); the cells are averaged.
        expected = float(np.log(2) * (weight * target + 1 - target).mean())
        assert task.loss(torch.zeros(1, 4), batch).item() == pytest.approx(expected)
    with pytest.raises(UserError, match="task.positive_weight=0.0: must be > 0"):
        ClevrRefTask(ClevrRefConfig(positive_weight=0.0), tmp_path, progress=False)
