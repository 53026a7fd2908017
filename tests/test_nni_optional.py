"""NNI stays optional: vlnas never imports it on its own, and asking for it without the extra is one line.

These run with or without the [nni] extra (tests/test_nni_interop.py needs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli.main import main

REPO = Path(__file__).resolve().parent.parent


def test_vlnas_imports_no_nni_or_lightning() -> None:
    code = ("import sys, nas.strategies, search_spaces, tasks, nas.interop.nni_genotype\n"
            "from nas.cli import main, search_cmd, genotype_cmd\n"
            "loaded = [m for m in ('nni', 'pytorch_lightning', 'lightning') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


@pytest.mark.parametrize("missing", ["nni", "pytorch_lightning"])
def test_strategy_nni_without_the_extra_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what Python does for a package that is not installed
    out = tmp_path / "run"
    assert main(["search", "--task", "vqa", "--strategy", "nni", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[nni]"' in err
    assert not out.exists()
