"""The spine through the real CLI: search -> genotype -> retrain -> results -> evaluate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.checkpoint import load_checkpoint
from nas.cli.main import main
from nas.genotype import load_genotype
from nas.registry import TASKS

SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search")
    assert main(["search", "--task", "vqa", "--out", str(out), *SMOKE]) == 0
    return out


def test_search_writes_a_valid_genotype_and_log(searched: Path, capsys: pytest.CaptureFixture) -> None:
    genotype = load_genotype(searched / "genotype.json")
    assert genotype.task == "vqa" and genotype.space == "mmnas"
    assert set(genotype.choices) == {"enc/0", "enc/1", "dec/0", "dec/1", "dec/2"}
    assert genotype.provenance["strategy"] == "mmnas" and genotype.provenance["epoch"] == 2
    assert genotype.provenance["config_hash"].startswith("sha256:")
    log = [json.loads(line) for line in (searched / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert genotype.metrics["heldout_accuracy"] == log[-1]["heldout_accuracy"]
    assert "arch_loss" in log[1] and "arch_loss" not in log[0]  # arch steps start after 1 warm-up epoch
    assert main(["genotype", "validate", str(searched / "genotype.json")]) == 0
    assert main(["genotype", "show", str(searched / "genotype.json")]) == 0
    assert main(["genotype", "diff", str(searched / "genotype.json"), str(searched / "genotype.json")]) == 0
    assert "identical architectures" in capsys.readouterr().out


def test_retrain_writes_results_that_the_evaluator_scores_identically(searched: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "retrain"
    # Write the results file for val, so it can be scored against the val annotations.
    assert main(["retrain", "--genotype", str(searched / "genotype.json"), "--out", str(out), *SMOKE,
                 "task.test_split=val"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    results = json.loads(Path(summary["results_file"]).read_text())
    data_dir = Path(summary["data_dir"])
    questions = json.loads((data_dir / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert sorted(r["question_id"] for r in results) == sorted(q["question_id"] for q in questions["questions"])
    assert all(set(r) == {"question_id", "answer"} for r in results)
    capsys.readouterr()
    assert main(["evaluate", "--task", "vqa", "--json", "--questions",
                 str(data_dir / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json"), "--annotations",
                 str(data_dir / "vqa" / "v2_mscoco_val2014_annotations.json"), "--results",
                 summary["results_file"]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["overall"] == summary["final"]["accuracy"]
    assert summary["baseline"]["accuracy"] < 100
    state = load_checkpoint(out / "checkpoints" / "last.pt")  # weights_only load
    assert state["epoch"] == 2 and state["genotype"]["choices"] == load_genotype(searched / "genotype.json").choices
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_resumed_search_matches_an_uninterrupted_one(searched: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    assert main(["search", "--out", str(out), *SMOKE, "train.epochs=1"]) == 0
    assert main(["search", "--out", str(out), "--resume", "--quiet", "train.epochs=2"]) == 0
    resumed = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    straight = [json.loads(line) for line in (searched / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(resumed, straight):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["genotype"] == b["genotype"]
    assert load_genotype(out / "genotype.json").provenance["epoch"] == 2


def test_retrain_resumes_from_its_run_folder_alone(searched: Path, tmp_path: Path) -> None:
    out = tmp_path / "retrain"
    assert main(["retrain", "--genotype", str(searched / "genotype.json"), "--out", str(out), *SMOKE,
                 "train.epochs=1"]) == 0
    # No --genotype: the run's checkpoint names what it trains, as its config.yaml names the recipe.
    assert main(["retrain", "--out", str(out), "--resume", "--quiet", "train.epochs=2"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["genotype"]["choices"] == load_genotype(searched / "genotype.json").choices
    assert json.loads((out / "summary.json").read_text())["genotype"]["choices"] == state["genotype"]["choices"]


def test_published_genotype_retrains_on_the_builtin_data(tmp_path: Path) -> None:
    from tests.conftest import REPO

    out = tmp_path / "mcan"
    assert main(["retrain", "--genotype", str(REPO / "genotypes" / "mcan.json"), "--out", str(out), *SMOKE,
                 "train.epochs=1", "space.hidden=16"]) == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    blocks = {k.split(".")[2] for k in state["model"] if k.startswith("backbone.decoder.")}
    assert len(blocks) == 18  # depth comes from the genotype, not smoke.yaml's 3 blocks
    assert isinstance(state["model"]["head.classifier.weight"], torch.Tensor)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=120)


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    cases = [
        (["retrain", "--genotype", str(tmp_path / "missing.json")], "missing.json: genotype file not found"),
        (["search", "--config", "smoke", "train.epochz=1"], "unknown key 'train.epochz'"),
        (["search", "--task", "vqq"], f"unknown task 'vqq'. Available: {', '.join(sorted(TASKS.names()))}"),
        (["search", "--config", str(tmp_path / "nope.yaml")], "nope.yaml: config file not found"),
        (["search", "--out", str(tmp_path / "fresh"), "--resume"], "config.yaml: not found"),
        (["retrain", "--config", "smoke"], "--genotype FILE is required (e.g. genotypes/mmnas_vqa.json)"),
        (["pretrain", "--out", str(tmp_path / "fresh"), "--resume"], "last.pt: checkpoint not found"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "vlnas-genotype", "version": 1, "space": "mmnas", "task": "vqa",
                               "choices": {"enc/0": "self_att", "dec/0": "warp_att"}}))
    cases.append((["genotype", "validate", str(bad)], "unknown op 'warp_att' for dec/0"))
    cases.append((["data", "synth", "--out", str(tmp_path / "d"), "trian_images=3"], "unknown key 'trian_images'"))
    for args, expected in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_explains_each_command() -> None:
    for command in (["search"], ["retrain"], ["evaluate"], ["genotype", "convert"], ["data", "synth"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: nas" in result.stdout
    assert "train.epochs=3" in run_cli("search", "--help").stdout
    assert "families=[side_exist,both_exist," in run_cli("data", "synth", "--help").stdout  # a list default as typed
    # An option two tasks share is defined once and explains both tasks' files.
    evaluate = " ".join(run_cli("evaluate", "--help").stdout.split())
    assert evaluate.count("--results RESULTS ") == 1
    assert "{refexp_index, image_index, mask_rle, box}; --task vqa: results JSON: a list of {question_id, answer}" \
        in evaluate


def test_data_synth_writes_the_released_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    settings = ["train_images=6", "val_images=3", "test_images=2", "feature_dim=8", "questions_per_image=2"]
    assert main(["data", "synth", "--task", "vqa", "--out", str(out), "--quiet", "--seed", "5", *settings]) == 0
    questions = json.loads((out / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert len(questions["questions"]) == 6 and questions["data_subtype"] == "val2014"
    assert len(list((out / "coco_extract" / "train2014").glob("*.npz"))) == 6
    assert json.loads((out / "synth_meta.json").read_text())["config"]["seed"] == 5
    assert f"--data {out}" in capsys.readouterr().out


@pytest.mark.parametrize("genotype,task", [("mmnas_itm", "vgd"), ("mmnas_vgd", "itm")])
def test_published_genotypes_retrain_across_tasks(genotype: str, task: str, tmp_path: Path) -> None:
    from tests.conftest import REPO

    assert main(["retrain", "--genotype", str(REPO / "genotypes" / f"{genotype}.json"), "--task", task,
                 "--out", str(tmp_path), *SMOKE, "train.epochs=1", "space.hidden=16"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == task and summary["final"]


def test_a_closed_output_pipe_stops_quietly() -> None:
    """``nas genotype show G | head`` must not print a BrokenPipeError traceback."""
    from tests.conftest import REPO

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before nas writes a byte
    result = subprocess.run([sys.executable, "-m", "nas", "genotype", "show", str(REPO / "genotypes" / "mcan.json")],
                            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""
