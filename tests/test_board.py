"""TensorBoard views: diagrams, tables, and a real TensorBoard server serving them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from nas.board.diagrams import genotype_diagram, probability_heatmap, streams_of
from nas.board.writer import entropy, genotype_diff, genotype_table, op_counts
from nas.cli.board_cmd import start_tensorboard
from nas.cli.main import main
from nas.errors import UserError

REPO = Path(__file__).resolve().parent.parent
CHOICES = {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "guided_att", "dec/1": "rel_self_att",
           "dec/2": "feed_forward"}


def test_streams_tables_counts_and_diffs() -> None:
    assert streams_of(["dec/10", "enc/0", "dec/2", "enc/1"]) == {"dec": ["dec/2", "dec/10"], "enc": ["enc/0", "enc/1"]}
    table = genotype_table(CHOICES, {"enc/0": {"self_att": 0.75, "feed_forward": 0.25}})
    assert table.splitlines()[0] == "| block | enc | dec |"
    assert "| 0 | self_att (0.75) | guided_att |" in table and "| 2 |  | feed_forward |" in table
    assert op_counts(CHOICES) == {"enc.self_att": 1, "enc.feed_forward": 1, "dec.guided_att": 1,
                                  "dec.rel_self_att": 1, "dec.feed_forward": 1}
    assert genotype_diff(CHOICES, CHOICES) == "unchanged since the previous epoch"
    changed = genotype_diff(CHOICES, {**CHOICES, "dec/1": "self_att"})
    assert changed.startswith("1 block(s) changed") and "| dec/1 | rel_self_att | self_att |" in changed
    assert entropy({"a": 0.5, "b": 0.5}) == pytest.approx(np.log(2)) and entropy({"a": 1.0, "b": 0.0}) == 0.0


def test_diagram_and_heatmap_are_rgb_pictures_with_one_colour_per_op() -> None:
    image = genotype_diagram(CHOICES, "t", {"guided_att": "GA"}, {"guided_att": "enc"})
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[1] > image.shape[0]
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    for hex_colour in ("#0072B2", "#E69F00", "#009E73", "#CC79A7"):  # the four ops used, in order
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, hex_colour
    heat = probability_heatmap({"enc/0": {"self_att": 0.9, "feed_forward": 0.1},
                                "dec/0": {"self_att": 0.1, "guided_att": 0.9}})
    assert heat.dtype == np.uint8 and heat.shape[2] == 3


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_nas_board_serves_genotypes_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    logdir = tmp_path / "board"
    runs = {path.stem for path in (REPO / "genotypes").glob("*.json")}  # every shipped genotype, any space
    assert {"mcan", "mmnas_vqa", "mmnas_vgd", "mmnas_itm", "lxr955", "simrec", "iep_ref"} <= runs
    assert main(["board", str(REPO / "genotypes"), "--logdir", str(logdir), "--no-serve"]) == 0
    assert f"wrote {len(runs)} run(s)" in capsys.readouterr().out
    assert main(["board", str(REPO / "genotypes"), "--logdir", str(logdir), "--no-serve"]) == 0  # rewrites cleanly
    process, url = start_tensorboard(logdir, "127.0.0.1", 0)
    try:
        assert set(_get(url + "data/runs")) == runs
        images = _get(url + "data/plugin/images/tags")
        assert all(images[run]["architecture/genotype"]["samples"] == 1 for run in runs)  # not duplicated
        text = _get(url + "data/plugin/text/tags")
        assert all("genotype/table/text_summary" in text[run] for run in runs)
        scalars = _get(url + "data/plugin/scalars/tags")
        assert "genotype/published_vqa_test_dev_overall" in scalars["mmnas_vqa"]
        groups = _post(url + "data/plugin/hparams/session_groups",
                       {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                        "colParams": [], "startIndex": 0, "sliceSize": 100})
        sessions = {s["name"] for group in groups["sessionGroups"] for s in group["sessions"]}
        assert sessions == runs
        by_run = {g["sessions"][0]["name"]: g["hparams"] for g in groups["sessionGroups"]}
        assert by_run["mmnas_vqa"]["dec.guided_att"] == 6 and by_run["mcan"]["dec.guided_att"] == 6
        assert by_run["mcan"]["enc.self_att"] == 6
        assert by_run["lxr955"]["lang/self.self_att"] == 9 and by_run["lxr955"]["cross/obj_cross.cross_att"] == 5
        assert by_run["simrec"]["language.lstm_sa"] == 1 and by_run["iep_ref"]["cell.conv3x3"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_board_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["board", str(tmp_path / "missing.json"), "--no-serve", "--logdir", str(tmp_path / "b")]) == 2
    assert "no such genotype file or run directory" in capsys.readouterr().err
    (tmp_path / "b" / "mcan").mkdir(parents=True)
    assert main(["board", str(REPO / "genotypes" / "mcan.json"), "--no-serve", "--logdir", str(tmp_path / "b")]) == 2
    assert "was not written by nas board" in capsys.readouterr().err
    with pytest.raises(UserError):
        from nas.board.collect import collect

        collect([tmp_path / "b"])


def test_tensorboard_serves_a_tiny_search_and_a_tiny_sweep(tmp_path: Path) -> None:
    """The run directories' own logs: a one-shot search, and an Optuna sweep whose trials are retrains."""
    search, sweep = tmp_path / "logs" / "search", tmp_path / "logs" / "sweep"
    common = ["--config", "smoke", "--quiet", "train.threads=1"]
    assert main(["search", "--task", "vqa", "--out", str(search), *common]) == 0
    assert main(["search", "--task", "vqa", "--strategy", "optuna", "--out", str(sweep), *common,
                 "strategy.trials=2", "strategy.trial_epochs=1"]) == 0
    process, url = start_tensorboard(tmp_path / "logs", "127.0.0.1", 0)
    try:
        runs = set(_get(url + "data/runs"))
        trials = sorted(r for r in runs if r.startswith("sweep/trials/"))
        assert "search/tensorboard" in runs and len(trials) == 2
        scalars = _get(url + "data/plugin/scalars/tags")
        assert {"search/loss", "search/heldout_accuracy", "architecture/mean_entropy", "architecture/argmax_changes",
                "entropy/dec/0"} <= set(scalars["search/tensorboard"])
        points = _get(url + "data/plugin/scalars/scalars?tag=search/loss&run=search/tensorboard")
        assert [p[1] for p in points] == [1, 2]  # one point per epoch
        for tag in ("architecture/probabilities", "architecture/genotype"):  # one picture per epoch
            entries = _get(url + f"data/plugin/images/images?run=search/tensorboard&tag={tag}")
            assert [e["step"] for e in entries] == [1, 2], tag
        text = _get(url + "data/plugin/text/tags")["search/tensorboard"]
        assert {"genotype/table/text_summary", "genotype/diff/text_summary"} <= set(text)
        for trial in trials:
            assert {"train/loss", "eval/accuracy"} <= set(scalars[trial])
        groups = _post(url + "data/plugin/hparams/session_groups",
                       {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                        "colParams": [], "startIndex": 0, "sliceSize": 100})
        rows = {s["name"]: g for g in groups["sessionGroups"] for s in g["sessions"]}
        assert set(trials) <= set(rows)
        for trial in trials:
            hparams = rows[trial]["hparams"]
            assert hparams["task"] == "vqa" and hparams["parameters"] > 0 and hparams["forward_gflops_per_sample"] > 0
            assert sum(v for k, v in hparams.items() if k.startswith("dec.")) == 3  # smoke: 3 decoder blocks
            metrics = {m["name"]["tag"]: m["value"] for m in rows[trial]["metricValues"]}
            assert "hparams/final_accuracy" in metrics
        image = urllib.request.urlopen(url + "data/plugin/images/individualImage?"
                                       + _image_query(url, "search/tensorboard", "architecture/genotype"), timeout=30)
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _image_query(url: str, run: str, tag: str) -> str:
    from urllib.parse import quote

    entries = _get(url + f"data/plugin/images/images?run={quote(run)}&tag={quote(tag)}")
    return entries[-1]["query"]
