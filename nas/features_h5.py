"""GQA-style HDF5 region features, read once into the same memory-mapped cache as ``.npz`` features.

The official GQA release ships ``gqa_objects_{0..15}.h5``, each with ``features`` (images, 100,
2048) float32 and ``bboxes`` (images, 100, 4) xyxy pixels, and ``gqa_objects_info.json`` mapping an
image id to ``{"file": k, "idx": row, "objectsNum": n, "width": w, "height": h}``. The info file
says how many of the 100 rows of an image are real. Reading all of it through h5py for every run
is slow and holds the file open in every data-loader worker; the cache is a plain memory map.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from nas.errors import UserError
from nas.features import RegionFeatures, open_cache, write_cache

__all__ = ["load_h5_features", "INFO_FILE"]

INFO_FILE = "gqa_objects_info.json"


def _read_info(folder: Path) -> dict[str, dict]:
    path = folder / INFO_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (GQA's object features come with their info file)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as error:
        raise UserError(f"{path}: unreadable JSON ({type(error).__name__})") from None
    if not isinstance(info, dict) or not info:
        raise UserError(f"{path}: expected an object keyed by image id, got {type(info).__name__}")
    for image_id, entry in info.items():
        missing = [k for k in ("file", "idx", "objectsNum", "width", "height") if not isinstance(entry, dict)
                   or k not in entry]
        if missing:
            raise UserError(f"{path}: image {image_id}: missing {', '.join(missing)}")
        for key in ("file", "idx", "objectsNum", "width", "height"):
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"{path}: image {image_id}: {key} should be a whole number >= 0, "
                                f"got {str(value)[:40]!r}")
    return info


def load_h5_features(folder: str | Path, image_ids: list[str] | None, max_regions: int, cache_root: Path,
                     progress: bool = True) -> RegionFeatures:
    """Region features of ``image_ids`` (all images of the info file when None) from GQA's HDF5 files."""
    import h5py

    folder = Path(folder)
    info_path = folder / INFO_FILE
    info = _read_info(folder)
    wanted = list(info) if image_ids is None else [str(i) for i in image_ids]
    missing = [i for i in wanted if i not in info]
    if missing:
        raise UserError(f"{info_path}: no entry for {len(missing)} image(s), e.g. {missing[0]!r}")
    files = sorted({int(info[i]["file"]) for i in wanted})
    paths = {k: folder / f"gqa_objects_{k}.h5" for k in files}
    digest = hashlib.sha256(f"{folder.resolve()}|{max_regions}|h5-v2|{len(wanted)}".encode())
    for path in [info_path, *paths.values()]:
        if not path.is_file():
            raise UserError(f"{path}: not found (named in {info_path})")
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    digest.update("|".join(wanted).encode())
    cache = Path(cache_root) / "features" / f"{folder.name}-h5-{digest.hexdigest()[:16]}"
    if not (cache / "done.json").is_file():
        handles = {}
        try:
            for k, path in paths.items():
                try:
                    handles[k] = h5py.File(path, "r")
                except OSError as error:
                    raise UserError(f"{path}: not a readable HDF5 file ({error})") from None
                for name in ("features", "bboxes"):
                    if name not in handles[k]:
                        raise UserError(f"{path}: no dataset '{name}' (found {', '.join(handles[k].keys())})")
            first = handles[files[0]]["features"]
            if first.ndim != 3:
                raise UserError(f"{paths[files[0]]}: 'features' should be (images, regions, dim), got {first.shape}")
            dim = int(first.shape[2])

            def rows() -> Iterator[tuple[str, np.ndarray, np.ndarray, int, int]]:
                for image_id in wanted:
                    entry = info[image_id]
                    handle, row, count = handles[int(entry["file"])], int(entry["idx"]), int(entry["objectsNum"])
                    if row >= handle["features"].shape[0]:
                        raise UserError(f"{info_path}: image {image_id}: idx {row} is past the "
                                        f"{handle['features'].shape[0]} rows of {handle.filename}")
                    yield (image_id, handle["features"][row, :count],
                           handle["bboxes"][row, :count], int(entry["height"]), int(entry["width"]))

            write_cache(cache, rows(), len(wanted), dim, max_regions, progress)
        finally:
            for handle in handles.values():
                handle.close()
    return open_cache(cache, folder)
