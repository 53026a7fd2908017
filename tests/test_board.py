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
    assert main(["board", str(REPO / "genotypes"), "--logdir", str(logdir), "--no-serve"]) == 0
    assert "wrote 4 run(s)" in capsys.readouterr().out
    assert main(["board", str(REPO / "genotypes"), "--logdir", str(logdir), "--no-serve"]) == 0  # rewrites cleanly
    process, url = start_tensorboard(logdir, "127.0.0.1", 0)
    try:
        runs = {"mcan", "mmnas_vqa", "mmnas_vgd", "mmnas_itm"}
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
