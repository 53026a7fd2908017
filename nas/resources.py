"""Locate the data folders shipped beside the code (``experiments/``, ``genotypes/``)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["resource_dir"]


def resource_dir(name: str) -> Path | None:
    """The folder ``name`` from a source checkout or editable install, else from the
    installed data files (``<prefix>/share/vlnas/<name>``)."""
    candidates = [
        Path(__file__).resolve().parent.parent / name,
        Path(sys.prefix) / "share" / "vlnas" / name,
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None
