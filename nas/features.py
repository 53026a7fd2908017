"""Bottom-up-attention region features: read per-image ``.npz`` once, cache as memory maps.

The released files (MCAN, OpenVQA, MmNas) hold ``x`` as (D, N), transposed;
``MILVLG/bottom-up-attention.pytorch`` writes (N, D). Both are read. The first
load of a split writes four ``.npy`` arrays (features, boxes, region counts,
image sizes) under the cache folder; later loads memory-map them, so start-up
is instant and the OS page cache, not the Python heap, holds the features.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from nas.errors import UserError
from nas.io import DIR_MODE
from nas.limits import check_free_space

__all__ = ["RegionFeatures", "load_region_features", "image_id_from_filename", "numeric_image_id", "default_cache_dir",
           "index_feature_files", "write_cache", "open_cache", "cache_bytes"]

_ARRAYS = ("features", "boxes", "num_regions", "image_size", "image_ids")


def default_cache_dir() -> Path:
    return Path(os.environ.get("VLNAS_CACHE", Path.home() / ".cache" / "vlnas"))


def image_id_from_filename(name: str) -> int:
    """``COCO_train2014_000000000009.jpg.npz`` -> 9 (the MCAN loader's rule)."""
    return int(name.split("_")[-1].split(".")[0])


def numeric_image_id(name: str) -> int | None:
    """The COCO or Visual Genome number in an image name (``COCO_val2014_000000000042`` -> 42,
    ``2375429`` -> 2375429), or None for names without one (``n250821``, ``dev-850-0-img0``)."""
    try:
        return image_id_from_filename(name + ".jpg")
    except ValueError:
        return None


@dataclass
class RegionFeatures:
    """Padded region features of one split, row ``row_of[image_id]`` per image."""

    features: np.ndarray  # (I, N, D) float32, zero-padded
    boxes: np.ndarray  # (I, N, 4) float32 xyxy pixels
    num_regions: np.ndarray  # (I,) int64
    image_size: np.ndarray  # (I, 2) int64 (height, width)
    image_ids: np.ndarray  # (I,) int64, or (I,) str as a TSV or HDF5 file names them
    directory: Path

    def __post_init__(self) -> None:
        if self.image_ids.dtype.kind in "iu":
            self.row_of: dict[int | str, int] = {int(image_id): row for row, image_id in enumerate(self.image_ids)}
            return
        # Named ids (LXMERT's COCO_val2014_000000000042, GQA's n250821, NLVR2's dev-850-0-img0) are found by
        # name, and those with a COCO/VG number also by it, as the VQA loaders ask.
        self.row_of = {str(name): row for row, name in enumerate(self.image_ids)}
        numbered = {}
        for row, name in enumerate(self.image_ids):
            number = numeric_image_id(str(name))
            if number is not None:
                numbered[number] = row if number not in numbered else -1  # -1: two names share the number
        self.row_of.update({number: row for number, row in numbered.items() if row >= 0})

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])


def load_region_features(directory: Path, image_ids: Iterable[int], max_regions: int, cache_root: Path,
                         progress: bool = True) -> RegionFeatures:
    """Region features for ``image_ids`` from the ``.npz`` files in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: feature folder not found")
    wanted = sorted(set(int(i) for i in image_ids))
    if not wanted:
        raise UserError(f"{directory}: no images were asked for (the split has no questions, expressions or images)")
    files = index_feature_files(directory)
    missing = [i for i in wanted if i not in files]
    if missing:
        raise UserError(f"{directory}: no feature file for {len(missing)} image(s), e.g. image_id {missing[0]} "
                        "(expected a file named like COCO_<split>_%012d.jpg.npz)")
    paths = [files[i] for i in wanted]
    key = _cache_key(directory, paths, max_regions)
    cache = Path(cache_root) / "features" / f"{directory.name}-{key}"
    if not (cache / "done.json").is_file():
        _build_cache(cache, paths, wanted, max_regions, progress)
    return open_cache(cache, directory)


def index_feature_files(directory: Path) -> dict[int, Path]:
    """image_id -> ``.npz`` path of the released-named feature files in ``directory`` (none if absent)."""
    files: dict[int, Path] = {}
    if not Path(directory).is_dir():
        return files
    for entry in os.scandir(directory):
        if entry.name.endswith(".npz"):
            try:
                files[image_id_from_filename(entry.name)] = Path(entry.path)
            except ValueError:
                continue  # not a feature file of the released naming scheme
    return files


def _cache_key(directory: Path, paths: list[Path], max_regions: int) -> str:
    digest = hashlib.sha256(f"{directory.resolve()}|{max_regions}|v1".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# What reading a damaged archive member can raise: bad CRC or header (BadZipFile, struct.error), a corrupt
# deflate stream (zlib.error), a member flagged encrypted (RuntimeError) or with an unknown compression
# (NotImplementedError), a cut or malformed .npy inside (ValueError, EOFError), an object array (ValueError),
# a header claiming an absurd shape (OverflowError, MemoryError). benchmarks/fuzz.py found several of these.
_UNREADABLE = (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, KeyError, NotImplementedError,
               RuntimeError, struct.error, OverflowError, MemoryError)
_NUMERIC = "fiu"  # dtype kinds that are numbers: float, signed and unsigned integer


def _read_npz(path: Path, feature_dim: int | None) -> tuple[np.ndarray, np.ndarray, int, int]:
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE as error:
        raise UserError(f"{path}: unreadable feature file ({_first_line(error)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: is a single .npy array, expected an .npz archive of x, bbox, image_h, image_w")
    try:
        with data:
            missing = [k for k in ("x", "bbox", "image_h", "image_w") if k not in data.files]
            if missing:
                raise UserError(f"{path}: missing key(s) {', '.join(missing)} (found {', '.join(data.files)})")
            x, bbox, height, width = (np.asarray(data[k]) for k in ("x", "bbox", "image_h", "image_w"))
    except _UNREADABLE as error:
        raise UserError(f"{path}: unreadable feature file ({_first_line(error)})") from None
    for name, array in (("x", x), ("bbox", bbox)):
        if array.dtype.kind not in _NUMERIC:
            raise UserError(f"{path}: {name} has dtype {array.dtype}, expected numbers (float32)")
    if x.ndim != 2 or bbox.ndim != 2 or bbox.shape[1] != 4:
        raise UserError(f"{path}: expected x of 2 dims and bbox (N, 4), got x {x.shape} and bbox {bbox.shape}")
    size = [_image_side(path, name, value) for name, value in (("image_h", height), ("image_w", width))]
    count = bbox.shape[0]
    # Released files store (D, N); bottom-up-attention.pytorch stores (N, D).
    if x.shape[0] == count and (x.shape[1] != count or x.shape[1] == feature_dim):
        regions = x
    elif x.shape[1] == count:
        regions = x.T
    else:
        raise UserError(f"{path}: x has shape {x.shape} but bbox lists {count} regions")
    if feature_dim is not None and regions.shape[1] != feature_dim:
        raise UserError(f"{path}: feature size {regions.shape[1]} differs from the other files ({feature_dim})")
    regions, bbox = regions.astype(np.float32, copy=False), bbox.astype(np.float32, copy=False)
    for name, array in (("x", regions), ("bbox", bbox)):
        # Caught here, a NaN names its file; in training it would only show as a NaN loss.
        if not np.isfinite(array).all():
            raise UserError(f"{path}: {name} holds NaN or infinite values (or values too large for float32)")
    return regions, bbox, size[0], size[1]


def _image_side(path: Path, name: str, value: np.ndarray) -> int:
    """``image_h`` / ``image_w``: one positive whole number of pixels."""
    if value.size != 1 or value.dtype.kind not in _NUMERIC or not np.isfinite(value).all() \
            or float(value.reshape(-1)[0]) != int(value.reshape(-1)[0]) or value.reshape(-1)[0] <= 0:
        shown_value = value.reshape(-1)[:4].tolist() if value.size else "an empty array"
        raise UserError(f"{path}: {name} must be one positive whole number of pixels, got {shown_value} "
                        f"(dtype {value.dtype}, shape {value.shape})")
    return int(value.reshape(-1)[0])


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _build_cache(cache: Path, paths: list[Path], image_ids: list[int], max_regions: int, progress: bool) -> None:
    first, *_ = _read_npz(paths[0], None)
    dim = first.shape[1]

    def rows() -> Iterator[tuple[int, np.ndarray, np.ndarray, int, int]]:
        for image_id, path in zip(image_ids, paths):
            yield (image_id, *_read_npz(path, dim))

    write_cache(cache, rows(), len(paths), dim, max_regions, progress)


def cache_bytes(count: int, max_regions: int, dim: int) -> int:
    """Bytes of a feature cache: features, boxes, counts, sizes and ids."""
    return count * (max_regions * (dim + 4) * 4 + 8 + 16 + 8)


def write_cache(cache: Path, rows: Iterable[tuple[int | str, np.ndarray, np.ndarray, int, int]], count: int,
                dim: int, max_regions: int, progress: bool) -> None:
    """Write ``count`` images' (image_id, regions (N, D), boxes (N, 4), height, width) as the memory-mapped
    cache in ``cache``, atomically: a crash leaves no cache folder, never a partial one. Image ids are
    all integers, or all names (stored as a fixed-width string array, which loads without pickle)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(cache.parent, cache_bytes(count, max_regions, dim), "the feature cache")
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    os.chmod(tmp, DIR_MODE)  # a shared cache stays readable to the group, as mkdir would leave it
    try:
        features = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32,
                                             shape=(count, max_regions, dim))
        boxes = np.zeros((count, max_regions, 4), np.float32)
        num_regions = np.zeros(count, np.int64)
        image_size = np.zeros((count, 2), np.int64)
        image_ids: list[int | str] = []
        bar = tqdm(rows, total=count, desc=f"caching features of {cache.name.rsplit('-', 1)[0]}", unit="img",
                   disable=None if progress else True, leave=False)
        for row, (image_id, regions, bbox, height, width) in enumerate(bar):
            kept = min(len(regions), max_regions)
            features[row, :kept] = regions[:kept]
            boxes[row, :kept] = bbox[:kept]
            num_regions[row] = kept
            image_size[row] = (height, width)
            image_ids.append(image_id)
        features.flush()
        del features
        for name, array in (("boxes", boxes), ("num_regions", num_regions), ("image_size", image_size),
                            ("image_ids", _id_array(image_ids))):
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        (tmp / "done.json").write_text(json.dumps({"images": count, "max_regions": max_regions}))
        if cache.exists():  # a concurrent or stale partial build
            shutil.rmtree(cache)
        os.replace(tmp, cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _id_array(image_ids: list[int | str]) -> np.ndarray:
    if all(isinstance(i, (int, np.integer)) for i in image_ids):
        return np.asarray(image_ids, np.int64)
    return np.asarray([str(i) for i in image_ids], dtype=str)


def open_cache(cache: Path, directory: Path) -> RegionFeatures:
    """The cached arrays of ``cache``; features memory-mapped."""
    try:
        arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r" if name == "features" else None,
                                allow_pickle=False) for name in _ARRAYS}
    except _UNREADABLE as error:  # written atomically, so only a damaged disk or a hand edit gets here
        raise UserError(f"{cache}: feature cache is damaged ({_first_line(error)}); delete that folder and the "
                        "next run rebuilds it") from None
    return RegionFeatures(directory=directory, **arrays)
