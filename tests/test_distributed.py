"""Data parallel training with real torch.distributed (gloo) processes on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.checkpoint import load_checkpoint
from nas.cli.main import main
from nas.distributed import World
from nas.data import GlobalBatchSampler
from nas.genotype import load_genotype

# Dropout off: ranks draw their own masks, so only a dropout-free run can match bit for bit.
COMMON = ["--config", "smoke", "--quiet", "train.threads=1", "space.dropout=0", "task.dropout=0",
          "train.epochs=1", "task.eval_split=none", "task.test_split=none"]

REPO = Path(__file__).resolve().parent.parent


def test_ranks_split_each_global_batch_like_one_bigger_batch() -> None:
    one = list(GlobalBatchSampler(21, 8, True, seed=5))
    ranks = [list(GlobalBatchSampler(21, 4, True, seed=5, world=World(rank=r, size=2))) for r in range(2)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(batch) for batch in one]
    assert [len(b) for b in ranks[0]] == [4, 4, 3] and [len(b) for b in ranks[1]] == [4, 4, 2]
    # The tail smaller than the world is dropped rather than leaving a rank without data.
    assert list(GlobalBatchSampler(9, 4, False, seed=0, world=World(rank=1, size=2))) == [[4, 5, 6, 7]]
    # A resumed epoch skips the global batches already trained on.
    assert list(GlobalBatchSampler(20, 2, False, seed=0, world=World(rank=0, size=2), start_step=3)) == [
        [12, 13], [16, 17]]


def _weights(run: Path) -> torch.Tensor:
    model = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    return torch.cat([value.reshape(-1).float() for value in model.values()])


def test_two_gloo_ranks_with_batch_b_train_like_one_process_with_batch_2b(tmp_path: Path) -> None:
    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
    runs = {name: tmp_path / name for name in ("two_ranks_b8", "one_b16", "one_b8")}
    assert main(["retrain", "--genotype", str(genotype), "--out", str(runs["two_ranks_b8"]), "--nproc", "2",
                 *COMMON, "train.batch_size=8"]) == 0
    assert main(["retrain", "--genotype", str(genotype), "--out", str(runs["one_b16"]), *COMMON,
                 "train.batch_size=16"]) == 0
    assert main(["retrain", "--genotype", str(genotype), "--out", str(runs["one_b8"]), *COMMON,
                 "train.batch_size=8"]) == 0
    steps = load_checkpoint(runs["two_ranks_b8"] / "checkpoints" / "last.pt")["optimizer"]["state"][0]["step"]
    assert int(steps) == 15  # 240 samples / (2 ranks x 8)
    same = (_weights(runs["two_ranks_b8"]) - _weights(runs["one_b16"])).abs()
    other = (_weights(runs["one_b8"]) - _weights(runs["one_b16"])).abs()
    # Summed gradients differ only in float rounding. Adam turns rounding on a gradient of ~0 into a
    # full lr-sized step of either sign, so a handful of weights may differ by about lr; the rest agree.
    assert float(same.mean()) < 1e-7 and float((same > 1e-5).float().mean()) < 1e-4
    assert float(other.mean()) > 1e-5 and float((other > 1e-5).float().mean()) > 0.1  # a real difference
    losses = {name: json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
              for name, run in runs.items()}
    assert losses["two_ranks_b8"] == pytest.approx(losses["one_b16"], rel=1e-6)
    assert json.loads((runs["two_ranks_b8"] / "summary.json").read_text())["processes"] == 2


def test_distributed_search_ranks_agree_on_the_genotype(tmp_path: Path) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    args = ["search", "--task", "vqa", "--config", "smoke", "--quiet", "train.threads=1", "space.dropout=0",
            "task.dropout=0", "strategy.arch_start_epoch=0"]
    assert main([*args, "--out", str(two), "--nproc", "2", "train.batch_size=8"]) == 0
    assert main([*args, "--out", str(one), "train.batch_size=16"]) == 0
    state_two = load_checkpoint(two / "search_checkpoint.pt")
    state_one = load_checkpoint(one / "search_checkpoint.pt")
    for label, alpha in state_two["strategy"]["alphas"].items():
        assert torch.allclose(alpha, state_one["strategy"]["alphas"][label], atol=1e-4), label
    assert load_genotype(two / "genotype.json").choices == load_genotype(one / "genotype.json").choices
    assert load_genotype(two / "genotype.json").provenance["processes"] == 2


def test_a_user_error_on_a_rank_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
    code = main(["retrain", "--genotype", str(genotype), "--out", str(tmp_path / "r"), "--nproc", "2", *COMMON,
                 "train.precision=fp16"])
    assert code == 2
    err = capsys.readouterr().err
    assert "fp16 needs a CUDA device" in err and "Traceback" not in err


def test_torchrun_launches_the_same_training_as_nproc(tmp_path: Path) -> None:
    import subprocess
    import sys

    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
    ours, theirs = tmp_path / "nproc", tmp_path / "torchrun"
    args = ["--genotype", str(genotype), *COMMON, "train.batch_size=8"]
    assert main(["retrain", "--out", str(ours), "--nproc", "2", *args]) == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--standalone", "-m", "nas", "retrain",
                             "--out", str(theirs), *args], capture_output=True, text=True, timeout=180,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((theirs / "summary.json").read_text())["processes"] == 2
    assert torch.equal(_weights(ours), _weights(theirs))


def test_nproc_below_one_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    genotype = Path(__file__).resolve().parent.parent / "genotypes" / "mcan.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--genotype", str(genotype), "--out", str(tmp_path / "r"), "--nproc", "0"])
    assert exit_info.value.code == 2
    assert "argument --nproc: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _listening() -> set[tuple[str, str]]:
    """(family, hex address:port) of every listening TCP socket on this machine."""
    found = set()
    for family in ("tcp", "tcp6"):
        path = Path("/proc/net") / family
        if path.is_file():
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    found.add((family, fields[1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux's /proc/net/tcp")
def test_an_nproc_run_listens_on_loopback_only(tmp_path: Path) -> None:
    """The rendezvous store and gloo's connections of --nproc ranks accept no other machine."""
    before = _listening()
    process = subprocess.Popen([sys.executable, "-m", "nas", "retrain", "--genotype", str(REPO / "genotypes" / "mcan.json"),
                                "--config", "smoke", "--quiet", "--nproc", "2", "--out", str(tmp_path / "run"),
                                "train.epochs=4", "train.threads=1"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    opened = set()
    while process.poll() is None:
        opened |= _listening() - before
        time.sleep(0.1)
    assert process.returncode == 0, process.stderr.read()
    assert opened, "no listening socket was seen while the ranks ran"
    loopback = {"tcp": "0100007F", "tcp6": "00000000000000000000000001000000"}
    assert all(address.split(":")[0] == loopback[family] for family, address in opened), opened
