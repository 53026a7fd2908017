"""CLEVR-Ref+ scene files: ``scenes/clevr_ref+_{split}_scenes.json``.

``{"info": ..., "scenes": [...]}`` with CLEVR's scene fields plus ``obj_mask``, a run-length
mask per object keyed by its 1-based index (``nas.rle``). Scene k must be image index k, as
the feature HDF5 rows are; only the fields the task uses are kept: attributes, relationships
and the masks (still encoded, decoded when needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserError, described
from nas.io import read_json
from nas.rle import decode_rle

__all__ = ["MASK_HEIGHT", "MASK_WIDTH", "ClevrScene", "read_scenes"]

MASK_HEIGHT, MASK_WIDTH = 320, 480  # CLEVR's render size; obj_mask runs cover it row-major


@dataclass(frozen=True)
class ClevrScene:
    image_index: int
    objects: list[dict]  # CLEVR object records (color, shape, material, size, ...)
    relationships: dict[str, list[list[int]]]
    masks: list[str]  # RLE of object i (0-based), from obj_mask[str(i + 1)]
    path: Path  # the file it came from, for error messages

    def mask(self, index: int) -> np.ndarray:
        """Object ``index``'s (320, 480) boolean mask; a malformed RLE is a one-line UserError."""
        try:
            return decode_rle(self.masks[index], MASK_HEIGHT, MASK_WIDTH)
        except ValueError as error:
            raise UserError(f"{self.path}: scene {self.image_index}: obj_mask[\"{index + 1}\"]: {error}") from None

    def union(self, indices: list[int]) -> np.ndarray:
        """The union of the masks of ``indices`` (0-based), (320, 480) bool."""
        out = np.zeros((MASK_HEIGHT, MASK_WIDTH), bool)
        for index in indices:
            out |= self.mask(index)
        return out


def read_scenes(path: str | Path) -> list[ClevrScene]:
    """Every scene of a CLEVR-Ref+ scenes file, in image-index order (scene k is image k)."""
    path = Path(path)
    data = read_json(path, "CLEVR-Ref+ scenes file")
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        raise UserError(f"{path}: expected an object with a 'scenes' list, got "
                        f"{described(data) if not isinstance(data, dict) else 'keys ' + ', '.join(data)}")
    scenes = []
    for position, record in enumerate(data["scenes"]):
        where = f"{path}: scene {position}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object, got {described(record)}")
        for key, kind in (("image_index", int), ("objects", list), ("relationships", dict), ("obj_mask", dict)):
            if key not in record:
                raise UserError(f"{where}: no '{key}'")
            if not isinstance(record[key], kind) or isinstance(record[key], bool):
                raise UserError(f"{where}: '{key}' should be a {kind.__name__}, got {described(record[key])}")
        if record["image_index"] != position:
            raise UserError(f"{where}: image_index is {record['image_index']}; scene k must be image k, "
                            "as the feature rows are")
        count = len(record["objects"])
        wanted = {str(i + 1) for i in range(count)}
        if set(record["obj_mask"]) != wanted:
            raise UserError(f"{where}: obj_mask keys {sorted(record['obj_mask'])} should be '1'..'{count}', "
                            "one per object (1-based)")
        masks = [record["obj_mask"][str(i + 1)] for i in range(count)]
        bad = next((m for m in masks if not isinstance(m, str)), None)
        if bad is not None:
            raise UserError(f"{where}: obj_mask values should be run-length strings, got {described(bad)}")
        scenes.append(ClevrScene(position, record["objects"], record["relationships"], masks, path))
    return scenes
