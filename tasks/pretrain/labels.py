"""The detector labels of obj36 TSV regions (``objects_id``/``attrs_id`` and their confidences).

The shared feature cache keeps features and boxes only; masked-object pre-training also needs
each region's class, so these four columns are read once into a small ``.npz`` beside that
cache, rows in the same (file) order, padded with -1 past ``num_boxes``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserError
from nas.features import RegionFeatures
from nas.features_tsv import read_obj_tsv
from nas.io import atomic_write

__all__ = ["RegionLabels", "load_region_labels"]


@dataclass
class RegionLabels:
    objects: np.ndarray  # (I, N) int64 class ids, -1 past an image's regions
    objects_conf: np.ndarray  # (I, N) float32
    attrs: np.ndarray  # (I, N) int64
    attrs_conf: np.ndarray  # (I, N) float32


def load_region_labels(path: Path, features: RegionFeatures, max_regions: int, cache_root: Path) -> RegionLabels:
    """The labels of every image of ``path`` in the rows of its feature cache ``features``."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_regions}|labels-v1".encode())
    cache = Path(cache_root) / "features" / f"{path.stem}-labels-{key.hexdigest()[:16]}.npz"
    if not cache.is_file():
        arrays = _read(path, features, max_regions)
        cache.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(cache, write)
    with np.load(cache, allow_pickle=False) as saved:
        return RegionLabels(**{name: saved[name] for name in ("objects", "objects_conf", "attrs", "attrs_conf")})


def _read(path: Path, features: RegionFeatures, max_regions: int) -> dict[str, np.ndarray]:
    count = len(features.image_ids)
    arrays = {"objects": np.full((count, max_regions), -1, np.int64),
              "objects_conf": np.zeros((count, max_regions), np.float32),
              "attrs": np.full((count, max_regions), -1, np.int64),
              "attrs_conf": np.zeros((count, max_regions), np.float32)}
    for line, record in enumerate(read_obj_tsv(path), start=1):
        if record.objects_id is None:
            raise UserError(f"{path}: line {line} is in BUTD's six-column layout, which has no objects_id; "
                            "masked-object pre-training needs LXMERT's ten columns")
        row = features.row_of[record.img_id]
        kept = min(len(record.boxes), max_regions)
        for name, values in (("objects", record.objects_id), ("objects_conf", record.objects_conf),
                             ("attrs", record.attrs_id), ("attrs_conf", record.attrs_conf)):
            arrays[name][row, :kept] = values[:kept]
        if (record.objects_id[:kept] < 0).any() or (record.attrs_id[:kept] < 0).any():
            raise UserError(f"{path}: line {line} ({record.img_id}): objects_id and attrs_id must be >= 0")
    return arrays
