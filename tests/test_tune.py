"""Ray Tune sweeps (``nas tune``) on a real two-node Ray cluster started with ``ray start`` on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

from nas.cli.main import main  # noqa: E402
from nas.genotype import load_genotype  # noqa: E402
from nas.tune.outputs import format_table  # noqa: E402
from nas.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from nas.tune.trial import _restore, flatten_params, trial_choices  # noqa: E402

RAY = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
TUNE = [sys.executable, "-m", "nas", "tune", "--task", "vqa", "--config", "smoke", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_status(address: str) -> str:
    return subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                          timeout=60).stdout


@contextlib.contextmanager
def two_node_cluster():
    """A head node and a worker node, each a separate ``ray start --block`` with one CPU."""
    # Unix socket paths must stay under ~107 bytes, so Ray's session folder cannot live in pytest's tmp_path.
    temp = Path(tempfile.mkdtemp(prefix="vlr", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 * 2**20),
              "--disable-usage-stats", "--block"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                             "--temp-dir", str(temp), *common], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    nodes = [head]
    try:
        deadline = time.monotonic() + 90
        while "1 node_" not in ray_status(address):
            assert head.poll() is None and time.monotonic() < deadline, "the head node did not start"
            time.sleep(1)
        nodes.append(subprocess.Popen([RAY, "start", "--address", address, *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        while ray_status(address).count(" node_") < 2:
            assert nodes[1].poll() is None and time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield address, env
    finally:
        for node in reversed(nodes):  # --block: stopping the command stops that node's processes
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_first_checkpoint(out: Path, deadline: float) -> Path:
    """The folder of the first trial that finished an epoch (its checkpoint is written)."""
    while time.monotonic() < deadline:
        for folder in sorted((out / "trials").glob("*")):
            if (folder / "metrics.jsonl").is_file() and (folder / "worker.json").is_file():
                return folder
        time.sleep(0.2)
    raise AssertionError("no trial finished an epoch in time")


# FIFO, so that every trial trains all its epochs and the killed one must come back to finish; with 3 trials
# TPE is still in its seeded random start-up, so the sampled genotypes depend on the seed alone.
SWEEP = ["--trials", "3", "--seed", "11", "strategy.trial_epochs=3", "strategy.scheduler=fifo",
         "strategy.max_failures=1"]


def sweep_records(out: Path) -> dict[str, dict]:
    return {json.loads(line)["trial_id"]: json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()}


@pytest.fixture(scope="module")
def cluster_sweep(tmp_path_factory: pytest.TempPathFactory):
    """A sweep on the two-node cluster in which one trial's worker process is SIGKILLed after its first epoch."""
    with two_node_cluster() as (address, env):
        out = tmp_path_factory.mktemp("tune") / "cluster"
        sweep = subprocess.Popen([*TUNE, "--address", address, "--out", str(out), *SWEEP], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        victim = wait_for_first_checkpoint(out, time.monotonic() + 240)
        first = json.loads((victim / "worker.json").read_text())["attempts"][0]
        os.kill(first["pid"], signal.SIGKILL)  # the trial's Ray worker process dies mid-training
        output, _ = sweep.communicate(timeout=400)
    assert sweep.returncode == 0, output
    return out, victim


def test_sweep_across_two_nodes_restarts_a_killed_trial_from_its_checkpoint(cluster_sweep) -> None:
    out, victim = cluster_sweep
    records = sweep_records(out)
    assert len(records) == 3 and all(r["status"] == "complete" and r["epochs"] == 3 for r in records.values()), records
    killed = records[victim.name]
    assert killed["attempts"] == 2, killed
    history = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # resumed from a finished epoch, none trained twice or lost
    log = (victim / "log.txt").read_text()
    # Resumed from the checkpoint of a finished epoch: Ray's, or the trial's own when the kill came
    # between writing it and Ray registering it. Either way no epoch was trained twice.
    assert "resumed from" in log and ("restored" in log or "resuming from the trial's own" in log), log
    assert [log.count(f"epoch {e}/3 loss=") for e in (1, 2, 3)] == [1, 1, 1], log
    assert all(r["attempts"] == 1 for trial_id, r in records.items() if trial_id != victim.name)
    # The trials ran on both nodes of the cluster.
    assert len({node for r in records.values() for node in r["nodes"]}) == 2, records

    genotype = load_genotype(out / "genotype.json")
    best = max(records.values(), key=lambda r: r["metric"])
    assert genotype.choices == best["choices"] and genotype.provenance["strategy"] == "ray"
    assert genotype.metrics["val_accuracy"] == best["metric"]
    assert sorted(p.name.split("-", 1)[0] for p in (out / "best").glob("*.json")) == ["1", "2", "3"]
    assert main(["genotype", "validate", str(out / "genotype.json")]) == 0


def test_the_same_seed_gives_the_same_sweep_locally_as_on_the_cluster(cluster_sweep, tmp_path: Path) -> None:
    """Same trials, same per-epoch metrics (the killed trial's resume included), same genotype."""
    cluster_out, _ = cluster_sweep
    out = tmp_path / "local"
    done = subprocess.run([*TUNE, "--out", str(out), *SWEEP], env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr

    def trained(records: dict[str, dict]) -> list[tuple]:
        return sorted((json.dumps(r["choices"], sort_keys=True), r["lr"], json.dumps(r["epoch_metrics"]))
                      for r in records.values())

    assert trained(sweep_records(out)) == trained(sweep_records(cluster_out))
    assert load_genotype(out / "genotype.json").choices == load_genotype(cluster_out / "genotype.json").choices


def test_local_sweep_with_asha_stops_weak_trials_and_resumes_when_rerun(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    command = [*TUNE, "--trials", "3", "--out", str(out), "strategy.trial_epochs=2", "strategy.reduction_factor=2",
               "strategy.sampler=random", "strategy.tune_lr=true"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 3
    # ASHA (grace period 1, reduction factor 2) lets the first trial at a rung go on and stops trials below
    # the best half after epoch 1; the statuses follow the epochs trained.
    for record in records:
        assert record["status"] == ("complete" if record["epochs"] == 2 else "stopped early"), record
        assert 1e-5 <= record["lr"] <= 1e-3
        assert list(record["epoch_metrics"]) == [str(e) for e in range(1, record["epochs"] + 1)]
    assert records[0]["status"] == "complete"  # best first: full-budget trials rank above stopped ones
    genotype = load_genotype(out / "genotype.json")
    assert genotype.provenance["hyperparameters"]["train.lr"] == records[0]["lr"]
    assert f"train.lr={records[0]['lr']:.3g}" in done.stdout

    # Rerunning the command restores the finished sweep from Ray's state: no trial trains again.
    before = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/metrics.jsonl")}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/*/metrics.jsonl")} == before
    assert [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()] == records


def _checkpoint_folder(folder: Path, epoch: int, steps: int = 0) -> Path:
    save_checkpoint({"epoch": epoch, "history": [], "progress": {"steps": steps} if steps else None},
                    folder / "last.pt")
    return folder


@pytest.mark.parametrize("ray_epoch, own, expected", [
    (None, None, (False, 0, None)),         # first attempt: start from scratch
    (None, (1, 0), (True, 0, (1, 0))),      # killed before Ray registered epoch 1: resume from the trial's own
    (1, (2, 0), (True, 1, (2, 0))),         # Ray lags one epoch behind the trial folder
    (1, (1, 5), (True, 1, (1, 5))),         # a mid-epoch save is further along than Ray's epoch
    (2, (1, 0), (True, 2, (2, 0))),         # restarted on a node whose own folder is stale: Ray's wins
    (2, (2, 0), (True, 2, (2, 0))),         # a tie: Ray's copy
    (2, None, (True, 2, (2, 0))),           # restarted on a node with no folder yet
])
def test_a_restarted_trial_resumes_from_the_furthest_checkpoint(tmp_path: Path, ray_epoch, own, expected) -> None:
    from ray import tune

    run_dir = tmp_path / "trial"
    if own is not None:
        _checkpoint_folder(run_dir / "checkpoints", *own)
    registered = (tune.Checkpoint.from_directory(str(_checkpoint_folder(tmp_path / "ray", ray_epoch)))
                  if ray_epoch is not None else None)
    resumed, reported = _restore(registered, run_dir)
    progress = expected[2]
    assert (resumed is not None, reported) == expected[:2]
    last = run_dir / "checkpoints" / "last.pt"
    if progress is None:
        assert not last.parent.exists()
    else:
        state = load_checkpoint(last)
        assert (state["epoch"], (state["progress"] or {}).get("steps", 0)) == progress


def test_trial_parameters_flatten_back_to_labels() -> None:
    nested = {"enc": {"0": "self_att", "1": "feed_forward"}, "dec": {"0": "guided_att"}, "train.lr": 3e-4}
    assert flatten_params(nested) == {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "guided_att",
                                      "train.lr": 3e-4}
    choices, lr = trial_choices(nested, ["enc/0", "enc/1", "dec/0"], 1e-4)
    assert choices == {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "guided_att"} and lr == 3e-4
    assert trial_choices({"enc": {"0": "x"}}, ["enc/0"], 1e-4)[1] == 1e-4


def test_bad_settings_and_unreachable_cluster_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["tune", "--config", "smoke", "--out", str(tmp_path / "a"), "strategy.scheduler=pbt"]) == 2
    assert "strategy.scheduler: unknown scheduler 'pbt'. Valid: asha, fifo" in capsys.readouterr().err
    assert main(["tune", "--config", "smoke", "--out", str(tmp_path / "b"), "strategy.grace_period=5"]) == 2
    assert "strategy.grace_period (5) exceeds strategy.trial_epochs (3)" in capsys.readouterr().err
    assert main(["tune", "--config", "smoke", "--nproc", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--nproc: each Ray Tune trial is one process" in capsys.readouterr().err
    assert main(["search", "--strategy", "ray", "--config", "smoke", "--out", str(tmp_path / "d")]) == 2
    assert "run it with 'nas tune'" in capsys.readouterr().err


def test_table_lists_best_trials_first() -> None:
    from nas.tune.outputs import TrialRecord

    trials = [TrialRecord("b", "complete", {}, 1e-4, 3, 50.0, 51.0, {}, 1),
              TrialRecord("a", "stopped early", {}, 2e-4, 1, 20.0, 20.0, {}, 2)]
    lines = format_table(trials, "val accuracy").splitlines()
    assert lines[0].split() == ["trial", "status", "epochs", "val", "accuracy", "attempts", "lr"]
    assert lines[1].split() == ["b", "complete", "3", "50.00", "1", "0.0001"]
    assert lines[2].split() == ["a", "stopped", "early", "1", "20.00", "2", "0.0002"]


def test_unreachable_cluster_is_refused_at_once(tmp_path: Path, capsys) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    assert main(["tune", "--config", "smoke", "--out", str(tmp_path / "a"), "--address", f"127.0.0.1:{port}"]) == 2
    assert f"--address: cannot reach a Ray cluster at 127.0.0.1:{port}: Connection refused" in capsys.readouterr().err
    assert time.monotonic() - started < 60
    assert main(["tune", "--config", "smoke", "--out", str(tmp_path / "b"), "--address", "nowhere"]) == 2
    assert "--address: expected auto or HOST:PORT, got 'nowhere'" in capsys.readouterr().err


@pytest.mark.parametrize("task,metric", [("vgd", "val_accuracy"), ("itm", "dev_rsum")])
def test_grounding_and_matching_sweeps_write_valid_genotypes(task: str, metric: str, tmp_path: Path) -> None:
    out = tmp_path / task
    done = subprocess.run([sys.executable, "-m", "nas", "tune", "--task", task, "--config", "smoke", "--quiet",
                           "--trials", "2", "--out", str(out), "strategy.trial_epochs=1", "train.threads=1"],
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    genotype = load_genotype(out / "genotype.json")
    assert genotype.task == task and genotype.provenance["strategy"] == "ray"
    assert metric in genotype.metrics, genotype.metrics
    assert main(["genotype", "validate", str(out / "genotype.json")]) == 0
