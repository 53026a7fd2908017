"""LXMERT's ``*_obj36.tsv`` region features (and the older BUTD column order), read once into the
same memory-mapped cache as the ``.npz`` features.

One image per line, tab-separated, no header. LXMERT's ten columns are
``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes,
features``; BUTD's ``generate_tsv.py`` writes six, ``image_id, image_w, image_h, num_boxes, boxes,
features`` (width before height). Array columns are standard base64 of the raw little-endian
bytes: int64 ids, float32 confidences, boxes (N, 4) xyxy pixels and features (N, D). Which
layout a line has is told by its number of fields. Parsing a large file takes minutes (LXMERT's
README warns of it); the cache makes every later load a memory map.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from nas.errors import UserError
from nas.features import RegionFeatures, open_cache, write_cache
from nas.io import atomic_write

__all__ = ["ObjRecord", "read_obj_tsv", "write_obj_tsv", "load_tsv_features", "LXMERT_COLUMNS", "BUTD_COLUMNS"]

LXMERT_COLUMNS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
                  "boxes", "features")
BUTD_COLUMNS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
_ARRAY_DTYPES = {"objects_id": np.int64, "objects_conf": np.float32, "attrs_id": np.int64,
                 "attrs_conf": np.float32}


@dataclass
class ObjRecord:
    img_id: str
    img_h: int
    img_w: int
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in pixels
    features: np.ndarray  # (N, D) float32
    objects_id: np.ndarray | None = None  # (N,) int64; None in the BUTD layout
    objects_conf: np.ndarray | None = None  # (N,) float32
    attrs_id: np.ndarray | None = None
    attrs_conf: np.ndarray | None = None


def _decode(path: Path, line: int, column: str, text: str, dtype: type, count: int) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{path}: line {line}, column {column}: not valid base64") from None
    itemsize = np.dtype(dtype).itemsize
    if count == 0 or not raw or len(raw) % (count * itemsize):  # empty: any count "divides" it
        raise UserError(f"{path}: line {line}, column {column}: {len(raw)} bytes do not hold {count} row(s) "
                        f"of {np.dtype(dtype).name}")
    values = np.frombuffer(raw, dtype=dtype)
    return values.reshape(count, -1) if len(values) != count else values


def _integer(path: Path, line: int, column: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{path}: line {line}, column {column}: expected a whole number, got {text[:20]!r}") from None


def read_obj_tsv(path: str | Path) -> Iterator[ObjRecord]:
    """Every image of an obj36 TSV, in file order; a malformed line is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: feature TSV not found")
    csv.field_size_limit(sys.maxsize)  # one field holds N x D floats in base64
    with open(path, newline="", encoding="utf-8") as handle:
        for line, fields in enumerate(_checked_rows(path, csv.reader(handle, delimiter="\t")), start=1):
            if len(fields) == len(LXMERT_COLUMNS):
                row = dict(zip(LXMERT_COLUMNS, fields))
            elif len(fields) == len(BUTD_COLUMNS):
                row = dict(zip(BUTD_COLUMNS, fields))
                row["img_id"], row["img_h"], row["img_w"] = row["image_id"], row["image_h"], row["image_w"]
            else:
                raise UserError(f"{path}: line {line}: expected {len(LXMERT_COLUMNS)} tab-separated columns "
                                f"(LXMERT) or {len(BUTD_COLUMNS)} (BUTD), got {len(fields)}")
            count = _integer(path, line, "num_boxes", row["num_boxes"])
            if count < 0:  # found by benchmarks/fuzz.py: -1 reached numpy's reshape
                raise UserError(f"{path}: line {line}, column num_boxes: expected a count, got {count}")
            boxes = _decode(path, line, "boxes", row["boxes"], np.float32, count)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise UserError(f"{path}: line {line}, column boxes: expected {count} x 4 floats, "
                                f"got {boxes.size} values")
            arrays = {key: _decode(path, line, key, row[key], dtype, count) for key, dtype in _ARRAY_DTYPES.items()
                      if key in row}
            yield ObjRecord(img_id=row["img_id"], img_h=_integer(path, line, "img_h", row["img_h"]),
                            img_w=_integer(path, line, "img_w", row["img_w"]), boxes=boxes,
                            features=_decode(path, line, "features", row["features"], np.float32, count), **arrays)


def _checked_rows(path: Path, rows: Iterator[list[str]]) -> Iterator[list[str]]:
    """The csv rows, with bytes that are not UTF-8 text or a malformed quote as one-line errors."""
    line = 0
    while True:
        try:
            fields = next(rows)
        except StopIteration:
            return
        except UnicodeDecodeError as error:  # found by benchmarks/fuzz.py: it used to end in a traceback
            raise UserError(f"{path}: line {line + 1} is not UTF-8 text (bad byte {error.object[error.start]:#04x})"
                            ) from None
        except csv.Error as error:
            raise UserError(f"{path}: line {line + 1}: {error}") from None
        line += 1
        yield fields


def _encode(array: np.ndarray, dtype: type) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def write_obj_tsv(path: str | Path, records: Iterable[ObjRecord]) -> Path:
    """Write ``records`` in LXMERT's ten-column layout (atomically); ``read_obj_tsv`` reads it back exactly."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            for record in records:
                count = len(record.boxes)
                empty_ids, empty_conf = np.zeros(count, np.int64), np.zeros(count, np.float32)
                writer.writerow([record.img_id, record.img_h, record.img_w,
                                 _encode(record.objects_id if record.objects_id is not None else empty_ids, np.int64),
                                 _encode(record.objects_conf if record.objects_conf is not None else empty_conf,
                                         np.float32),
                                 _encode(record.attrs_id if record.attrs_id is not None else empty_ids, np.int64),
                                 _encode(record.attrs_conf if record.attrs_conf is not None else empty_conf,
                                         np.float32),
                                 count, _encode(record.boxes, np.float32), _encode(record.features, np.float32)])

    return atomic_write(path, write)


def load_tsv_features(path: str | Path, max_regions: int, cache_root: Path, progress: bool = True
                      ) -> RegionFeatures:
    """All images of an obj36 TSV as region features: parsed once into the cache, then memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: feature TSV not found")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_regions}|tsv-v2".encode())
    cache = Path(cache_root) / "features" / f"{path.stem}-{key.hexdigest()[:16]}"
    if not (cache / "done.json").is_file():
        count = _count_lines(path)
        if count == 0:
            raise UserError(f"{path}: no images in the file")
        first = next(read_obj_tsv(path))
        dim = first.features.shape[1]

        def rows() -> Iterator[tuple[str, np.ndarray, np.ndarray, int, int]]:
            for line, record in enumerate(read_obj_tsv(path), start=1):
                if record.features.shape[1] != dim:
                    raise UserError(f"{path}: line {line}: feature size {record.features.shape[1]} differs from "
                                    f"line 1's ({dim})")
                yield record.img_id, record.features, record.boxes, record.img_h, record.img_w

        write_cache(cache, rows(), count, dim, max_regions, progress)
    return open_cache(cache, path)


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    return lines + (last != b"\n")  # a last line without its newline
