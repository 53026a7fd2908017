"""SCAN's precomputed-feature layout (``<dataset>_precomp/``) for image-text matching.

``{split}_ims.npy`` (N_img, R, D), ``{split}_caps.txt`` with five consecutive
captions per image, and ``{split}_ids.txt`` (one line per image for train, one
per caption for dev/test, as MmNas reads them). SCAN ships no boxes; vlnas
reads the optional ``{split}_boxes.npy`` (N_img, R, 4, xyxy pixels) and
``{split}_image_size.npy`` (N_img, 2) when present, else relation attention
sees all-zero boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserError, shown
from nas.features import RegionFeatures

__all__ = ["PrecompSplit", "read_precomp"]

CAPTIONS_PER_IMAGE = 5


@dataclass
class PrecompSplit:
    name: str
    captions: list[str]  # 5 per image, image-major
    features: RegionFeatures  # row k = image k

    @property
    def num_images(self) -> int:
        return len(self.features.image_ids)

    def head(self, max_images: int | None) -> PrecompSplit:
        """The first ``max_images`` images in file order and their captions (all when None).

        ``{split}_ims.npy`` is memory-mapped, so the other images' features are never read.
        """
        if max_images is None or max_images >= self.num_images:
            return self
        f, n = self.features, max_images
        features = RegionFeatures(features=f.features[:n], boxes=f.boxes[:n], num_regions=f.num_regions[:n],
                                  image_size=f.image_size[:n], image_ids=f.image_ids[:n], directory=f.directory)
        return PrecompSplit(self.name, self.captions[:CAPTIONS_PER_IMAGE * n], features)


def read_precomp(folder: Path, split: str) -> PrecompSplit:
    images_path = folder / f"{split}_ims.npy"
    captions_path = folder / f"{split}_caps.txt"
    if not images_path.is_file() or not captions_path.is_file():
        raise UserError(f"{folder}: split '{split}' needs {images_path.name} and {captions_path.name}")
    images = _load_array(images_path, mmap=True)
    if images.ndim != 3:
        raise UserError(f"{images_path}: expected (images, regions, features), got shape {images.shape}")
    if len(images) == 0:
        raise UserError(f"{images_path}: holds no images (shape {images.shape})")
    captions = _read_lines(captions_path).splitlines()
    if len(captions) != CAPTIONS_PER_IMAGE * len(images):
        raise UserError(f"{captions_path}: {len(captions)} captions for {len(images)} images "
                        f"(expected {CAPTIONS_PER_IMAGE} per image)")
    count, regions = images.shape[:2]
    ids = np.arange(count, dtype=np.int64)
    ids_path = folder / f"{split}_ids.txt"
    if ids_path.is_file():
        lines = _read_ids(ids_path)
        # dev/test list one id per caption; keep every fifth (MmNas's loader).
        lines = lines[::CAPTIONS_PER_IMAGE] if len(lines) == CAPTIONS_PER_IMAGE * count else lines
        if len(lines) != count:
            raise UserError(f"{ids_path}: {len(lines)} ids for {count} images")
        ids = np.asarray(lines, np.int64)
    boxes = _optional(folder / f"{split}_boxes.npy", (count, regions, 4), np.float32)
    sizes = _optional(folder / f"{split}_image_size.npy", (count, 2), np.int64)
    if sizes is None:
        sizes = np.ones((count, 2), np.int64)
    features = RegionFeatures(features=images, boxes=boxes if boxes is not None else
                              np.zeros((count, regions, 4), np.float32),
                              num_regions=np.full(count, regions, np.int64), image_size=sizes, image_ids=ids,
                              directory=folder)
    return PrecompSplit(split, captions, features)


def _optional(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    if not path.is_file():
        return None
    array = _load_array(path, mmap=False)
    if array.shape != shape:
        raise UserError(f"{path}: expected shape {shape}, got {array.shape}")
    return array.astype(dtype, copy=False)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """One numeric ``.npy`` array (memory-mapped for the features: F30K's train_ims.npy is ~8 GB)."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic:
        raise UserError(f"{path}: is empty, expected a .npy array")
    if magic.startswith(b"PK"):
        raise UserError(f"{path}: is an .npz archive, expected one array saved with numpy.save (.npy)")
    if magic != b"\x93NUMPY":
        raise UserError(f"{path}: not a .npy file (it does not start with numpy's magic bytes)")
    try:
        # allow_pickle=False: an array file must never be able to run code.
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise UserError(f"{path}: unreadable .npy ({' '.join(str(error).split())[:200]})") from None
    if array.dtype.kind not in "fiu":
        raise UserError(f"{path}: has dtype {array.dtype}, expected numbers")
    return array


def _read_lines(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from None


def _read_ids(path: Path) -> list[int]:
    ids = []
    for number, line in enumerate(_read_lines(path).splitlines(), 1):
        if line.strip():
            try:
                ids.append(int(line))
            except ValueError:
                raise UserError(f"{path}: line {number} is not an image id (a whole number): "
                                f"{shown(line.strip())}") from None
    return ids
