"""``nas submit``: evaluation-server files from a retrained checkpoint, complete or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.errors import UserError
from nas.registry import TASKS

GENOTYPE = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
SMOKE = ["--config", "smoke", "--quiet", "train.threads=1", "train.epochs=1"]


@pytest.fixture(scope="module")
def vqa_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa-run")
    assert main(["retrain", "--genotype", str(GENOTYPE), "--out", str(out), *SMOKE, "train.ema_decay=0.5"]) == 0
    return out


def test_vqa_submission_covers_every_test_question_with_string_answers(vqa_run: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "vqa_test.json"
    capsys.readouterr()
    assert main(["submit", "--checkpoint", str(vqa_run / "checkpoints" / "last.pt"), "--split", "test",
                 "--out", str(target), "--task", "vqa", "--quiet"]) == 0
    assert f"test: wrote {target} (ema weights)" in capsys.readouterr().out
    data_dir = Path(json.loads((vqa_run / "summary.json").read_text())["data_dir"])
    questions = json.loads((data_dir / "vqa" / "v2_OpenEnded_mscoco_test2015_questions.json").read_text())
    results = json.loads(target.read_text())
    assert isinstance(results, list) and all(set(r) == {"question_id", "answer"} for r in results)
    assert all(isinstance(r["question_id"], int) and isinstance(r["answer"], str) and r["answer"] for r in results)
    assert sorted(r["question_id"] for r in results) == sorted(q["question_id"] for q in questions["questions"])
    # The run's own results file came from the same final (averaged) weights.
    assert results == json.loads((vqa_run / "results" / "vqa_test_results.json").read_text())


def test_submitting_a_labelled_split_reports_the_run_metric(vqa_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["submit", "--checkpoint", str(vqa_run / "checkpoints" / "last.pt"), "--split", "val",
                 "--out", str(tmp_path / "val.json"), "--quiet"]) == 0
    final = json.loads((vqa_run / "summary.json").read_text())["final"]["accuracy"]
    assert f"accuracy on val: {final:.2f}" in capsys.readouterr().out


def test_incomplete_predictions_are_refused_and_nothing_is_written(vqa_run: Path, tmp_path: Path) -> None:
    task = TASKS.get("vqa")(_task_config(vqa_run), vqa_run, progress=False)
    data = task.prepare(["test"])
    dataset = data.splits["test"]
    ids = [int(q) for q in dataset.question_ids]
    full = [{"question_id": q, "answer": "yes"} for q in ids]
    target = tmp_path / "partial.json"
    with pytest.raises(UserError, match=rf"refusing to write an incomplete submission: 2 of {len(ids)} "
                                        rf"question_ids have no prediction \({ids[3]}, {ids[7]}\)"):
        task.write_results([p for i, p in enumerate(full) if i not in (3, 7)], target, dataset)
    with pytest.raises(UserError, match="are predicted twice"):
        task.write_results(full + full[:1], target, dataset)
    with pytest.raises(UserError, match="non-string answer"):
        task.write_results([{**full[0], "answer": 3}] + full[1:], target, dataset)
    assert not target.exists() and not list(tmp_path.iterdir())
    assert json.loads(task.write_results(full, target, dataset).read_text()) == full


def test_submit_refuses_a_checkpoint_of_another_task(vqa_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["submit", "--checkpoint", str(vqa_run / "checkpoints" / "last.pt"), "--task", "vgd"]) == 2
    assert "is a 'vqa' checkpoint, not 'vgd'" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["vgd", "itm"])
def test_grounding_and_matching_submissions(task: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["retrain", "--genotype", str(GENOTYPE), "--task", task, "--out", str(run), *SMOKE]) == 0
    checkpoint = run / "checkpoints" / "last.pt"
    target = tmp_path / ("test.json" if task == "vgd" else "test.npy")
    assert main(["submit", "--checkpoint", str(checkpoint), "--out", str(target), "--quiet"]) == 0  # its test split
    summary = json.loads((run / "summary.json").read_text())
    if task == "vgd":
        predictions = json.loads(target.read_text())
        assert predictions == json.loads(Path(summary["results_file"]).read_text())
        assert all(set(p) == {"sent_id", "bbox"} and len(p["bbox"]) == 4 for p in predictions)
    else:
        sims = np.load(target)
        assert np.array_equal(sims, np.load(summary["results_file"])) and not np.isnan(sims).any()
        assert sims.shape[1] == 5 * sims.shape[0]


def _task_config(run: Path):
    import yaml

    from nas.config import Layer, resolve_config

    return resolve_config([Layer("saved", yaml.safe_load((run / "config.yaml").read_text()))]).task
