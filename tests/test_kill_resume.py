"""SIGKILL a real run mid-epoch, rerun the same command, and get the uninterrupted result exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.checkpoint import load_checkpoint
from nas.errors import UserError

REPO = Path(__file__).resolve().parent.parent
# Small batches and a checkpoint every optimizer step: many mid-epoch points to be killed at.
FAST = ["--config", "smoke", "--quiet", "train.threads=1", "train.batch_size=4", "train.checkpoint_every=1"]


def _command(kind: str, out: Path) -> list[str]:
    if kind == "retrain":
        return [sys.executable, "-m", "nas", "retrain", "--genotype", str(REPO / "genotypes" / "mcan.json"),
                "--out", str(out), *FAST]
    return [sys.executable, "-m", "nas", "search", "--task", "vqa", "--out", str(out), *FAST]


def _checkpoint(kind: str, out: Path) -> Path:
    return out / ("checkpoints/last.pt" if kind == "retrain" else "search_checkpoint.pt")


def _kill_mid_epoch(kind: str, out: Path, min_steps: int) -> dict:
    """Start the run, SIGKILL it once a checkpoint shows ``min_steps`` steps into epoch 2."""
    process = subprocess.Popen(_command(kind, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = _checkpoint(kind, out)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
            if path.is_file():
                try:
                    state = load_checkpoint(path)
                except UserError:
                    continue
                progress = state.get("progress")
                if state["epoch"] == 1 and progress and progress["steps"] >= min_steps:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return state
            time.sleep(0.05)
        raise AssertionError("no mid-epoch checkpoint appeared in time")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run(kind: str, out: Path) -> None:
    result = subprocess.run(_command(kind, out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", ["retrain", "search"])
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(kind: str, tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    at_kill = _kill_mid_epoch(kind, killed, min_steps=8)
    # Whatever the kill interrupted, the checkpoint on disk is a complete one, and no temp file is left.
    survivor = load_checkpoint(_checkpoint(kind, killed))
    assert survivor["epoch"] == 1 and survivor["progress"]["steps"] >= at_kill["progress"]["steps"]
    _run(kind, killed)  # the same command again: it finds the checkpoint and resumes
    _run(kind, whole)
    assert not [p for p in killed.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]

    final_killed = load_checkpoint(_checkpoint(kind, killed))
    final_whole = load_checkpoint(_checkpoint(kind, whole))
    assert final_killed["epoch"] == final_whole["epoch"] == 2 and final_killed["progress"] is None
    for name, value in final_whole["model"].items():
        assert torch.equal(final_killed["model"][name], value), name
    assert final_killed["history"] == final_whole["history"]
    log = (killed / "log.txt").read_text()
    assert "resuming it" in log and "resumed from" in log
    if kind == "search":
        assert (json.loads((killed / "genotype.json").read_text())["choices"]
                == json.loads((whole / "genotype.json").read_text())["choices"])
        for label, alpha in final_whole["strategy"]["alphas"].items():
            assert torch.equal(final_killed["strategy"]["alphas"][label], alpha)
    else:
        assert (json.loads((killed / "summary.json").read_text())["final"]
                == json.loads((whole / "summary.json").read_text())["final"])


def test_rerun_into_a_run_with_another_config_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run("retrain", out)
    changed = _command("retrain", out) + ["train.lr=0.5"]
    result = subprocess.run(changed, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"nas: error: {out}: already holds a run with another config (differs in train.lr); "
        "continue it with --resume, or pick a new --out"]
    assert os.path.getsize(out / "config.yaml") > 0


def test_ctrl_c_saves_at_a_step_boundary_and_the_rerun_matches(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) mid-epoch: the run finishes its optimizer step, saves, exits 130; rerun continues."""
    graceful = [c for c in _command("retrain", tmp_path / "x") if c != "train.checkpoint_every=1"]
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"

    def command(out: Path) -> list[str]:
        return [str(out) if c == str(tmp_path / "x") else c for c in graceful]

    process = subprocess.Popen(command(stopped), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = stopped / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not first.is_file():  # the end of epoch 1: epoch 2 is running now
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    state = load_checkpoint(first)
    assert state["epoch"] == 1 and state["progress"]["steps"] >= 1  # saved mid-epoch, at a step boundary
    for out in (stopped, whole):
        result = subprocess.run(command(out), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    a, b = load_checkpoint(first), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert a["history"] == b["history"]


@pytest.mark.parametrize("kind", ["retrain", "search"])
def test_a_run_killed_after_its_last_checkpoint_writes_its_outputs_when_rerun(kind: str, tmp_path: Path) -> None:
    """A kill between the last checkpoint and the final files (results, summary, genotype, log) used to
    leave a run that refused to go on ('already trained'); the rerun now writes them without training."""
    out = tmp_path / kind
    _run(kind, out)
    outputs = (["summary.json", "metrics.jsonl", "results/vqa_test_results.json"] if kind == "retrain"
               else ["genotype.json", "search_log.jsonl"])
    before = {name: (out / name).read_text() for name in outputs}
    checkpoint = _checkpoint(kind, out).read_bytes()
    for name in outputs:  # what the kill would have kept from being written
        (out / name).unlink()
    _run(kind, out)
    assert _checkpoint(kind, out).read_bytes() == checkpoint  # nothing was trained again
    for name in outputs:
        if name == "genotype.json":
            again, first = json.loads((out / name).read_text()), json.loads(before[name])
            assert again["choices"] == first["choices"] and again["metrics"] == first["metrics"]
            assert again["provenance"]["epoch"] == first["provenance"]["epoch"]
        elif name == "summary.json":
            again, first = json.loads((out / name).read_text()), json.loads(before[name])
            assert again["final"] == first["final"] and again["best"] == first["best"]
        else:
            assert (out / name).read_text() == before[name], name
