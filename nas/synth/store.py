"""How every built-in dataset lands on disk: built in a temporary sibling, then swapped in.

A crash leaves the old folder (or nothing) in place, never a half-written dataset; an
existing folder is replaced only when one of our generators made it, so a user's files
are never deleted; a complete dataset for the same config is recognised and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from nas.errors import UserError

__all__ = ["write_json", "read_meta", "build_atomically", "ensure_dataset", "check_fields"]

T = TypeVar("T")


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def scene_checks(config: Any) -> list[tuple[str, bool, str]]:
    """Checks of the scene and feature fields every generator config shares (see ``check_fields``)."""
    return [
        ("feature_dim", config.feature_dim >= 8, ">= 8"),
        ("min_objects", 2 <= config.min_objects <= config.max_objects, "in 2..max_objects"),
        ("max_objects", config.max_objects <= 10, "<= 10"),
        ("feature_noise", config.feature_noise >= 0, ">= 0"),
        ("image_width", config.image_width >= 64, ">= 64"),
        ("image_height", config.image_height >= 64, ">= 64"),
    ]


def seeded_rng(config: Any, stream: int, split: int = 0, index: int = 0) -> np.random.Generator:
    """The generator of one random stream, split and item: each is reproducible on its own."""
    return np.random.default_rng([config.seed, stream, split, index])


def check_fields(config: object, checks: list[tuple[str, bool, str]]) -> None:
    """Raise a one-line error naming the first field whose check failed."""
    for name, ok, rule in checks:
        if not ok:
            raise UserError(f"{type(config).__name__}.{name}={getattr(config, name)!r}: must be {rule}")


def _load_meta(root: Path) -> dict | None:
    try:
        meta = json.loads((root / "synth_meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def read_meta(root: Path, generator: str, version: int, config: object) -> dict | None:
    """``root``'s synth_meta.json if ``generator``/``version`` wrote it for ``config``, else None."""
    meta = _load_meta(root)
    wanted = json.loads(json.dumps(asdict(config)))
    if meta is None or (meta.get("generator"), meta.get("version"), meta.get("config")) != (generator, version,
                                                                                             wanted):
        return None
    return meta


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():  # an outdated synthetic dataset: move it aside, then drop it
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def build_atomically(out_dir: Path, generator: str, build: Callable[[Path], T]) -> T:
    """Run ``build`` on a fresh temporary sibling of ``out_dir``, then rename it into place.

    An existing ``out_dir`` is replaced only when it is empty or was made by ``generator``, so
    neither a user's folder nor another kind of synthetic dataset is ever deleted. On any
    failure the temporary directory goes and ``out_dir`` is left as it was.
    """
    if out_dir.exists() and (not out_dir.is_dir() or (
            any(out_dir.iterdir()) and (_load_meta(out_dir) or {}).get("generator") != generator)):
        raise UserError(f"{out_dir}: exists and is not a vlnas synthetic dataset made by {generator}; "
                        "choose an empty or new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the dataset's mode
        result = build(tmp)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def ensure_dataset(out_dir: Path, generator: str, read_existing: Callable[[Path], T | None],
                   build: Callable[[Path], T]) -> T:
    """The summary of the dataset in ``out_dir``: read when it is already there for this config,
    else built atomically (see ``build_atomically``) and pointed at ``out_dir``.

    An existing ``out_dir`` is replaced only when it is empty or an earlier dataset of this
    generator; anything else is refused rather than deleted.
    """
    out_dir = Path(out_dir)
    existing = read_existing(out_dir)
    if existing is not None:
        return existing
    return replace(build_atomically(out_dir, generator, build), root=out_dir)
