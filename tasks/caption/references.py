"""COCO-captions reference files (``captions_val2014.json``) and image-info files, checked on read.

``pycocotools.COCO`` indexes ``images[].id`` and ``annotations[].{id, image_id}`` without
checking them: a repeated id silently replaces the earlier record, and an image without a
caption makes the evaluator fail late or score nothing. So every record is checked here, and
each mistake is one line naming the file, the record, the key and the value. Flickr30K
converted to this layout (Karpathy's split) is read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError, described, json_type
from nas.io import read_json

__all__ = ["CaptionReferences", "read_image_info", "read_references", "read_split_images"]

# Keys every record must carry, with their JSON type. Images may also carry height and width.
_IMAGE_KEYS = {"id": int, "file_name": str}
_ANNOTATION_KEYS = {"id": int, "image_id": int, "caption": str}
_SIZE_KEYS = ("height", "width")
_TYPE_WORDS = {int: "an integer", str: "a string"}


@dataclass
class CaptionReferences:
    image_ids: list[int]  # in file order
    captions: dict[int, list[str]]  # image id -> its reference captions, in file order
    file_names: dict[int, str]
    sizes: dict[int, tuple[int, int]]  # image id -> (height, width), for images that state them

    def __len__(self) -> int:
        return len(self.image_ids)


def _list(path: Path, data: Any, key: str) -> list:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with '{key}' (the COCO captions format), "
                        f"got a JSON {json_type(data)}")
    if key not in data:
        raise UserError(f"{path}: no '{key}' list (the COCO captions format)")
    if not isinstance(data[key], list):
        raise UserError(f"{path}: '{key}' must be a list, got {described(data[key])}")
    return data[key]


def _checked(path: Path, key: str, number: int, record: Any, required: dict[str, type]) -> dict:
    """``record`` (``key[number]`` of ``path``) with each required key of the right type."""
    where = f"{path}: {key}[{number}]"
    if not isinstance(record, dict):
        raise UserError(f"{where} must be an object, got {described(record)}")
    for name, kind in required.items():
        if name not in record:
            raise UserError(f"{where} has no key '{name}'")
        value = record[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{where}: '{name}' must be {_TYPE_WORDS[kind]}, got {described(value)}")
    return record


def _images(path: Path, data: Any, sizes: dict[int, tuple[int, int]] | None = None) -> dict[int, dict]:
    """image id -> record of the ``images`` list, in file order; refuses repeated ids."""
    images: dict[int, tuple[int, dict]] = {}
    for number, record in enumerate(_list(path, data, "images")):
        record = _checked(path, "images", number, record, _IMAGE_KEYS)
        image_id = record["id"]
        if image_id in images:
            raise UserError(f"{path}: image id {image_id} appears twice (images[{images[image_id][0]}] and "
                            f"images[{number}])")
        images[image_id] = (number, record)
        if sizes is not None:
            size = [record.get(name) for name in _SIZE_KEYS]
            for name, value in zip(_SIZE_KEYS, size):
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    raise UserError(f"{path}: images[{number}]: '{name}' must be a positive integer, "
                                    f"got {described(value)}")
            if None not in size:
                sizes[image_id] = (size[0], size[1])
    if not images:
        raise UserError(f"{path}: 'images' is empty")
    return {image_id: record for image_id, (_, record) in images.items()}


def read_references(path: str | Path) -> CaptionReferences:
    """Read a COCO-layout captions file: every image with at least one caption, ids unique."""
    path = Path(path)
    return _references(path, read_json(path, "caption references file"))


def read_split_images(path: str | Path) -> tuple[list[int], dict[int, list[str]] | None]:
    """A split's image ids in file order and their captions, from a references file, or None for the
    captions of an image-info file (a test split's); the file is read once."""
    path = Path(path)
    data = read_json(path, "captions or image-info file")
    if isinstance(data, dict) and "annotations" in data:
        references = _references(path, data)
        return references.image_ids, references.captions
    return list(_images(path, data)), None


def _references(path: Path, data: Any) -> CaptionReferences:
    sizes: dict[int, tuple[int, int]] = {}
    images = _images(path, data, sizes)
    captions: dict[int, list[str]] = {image_id: [] for image_id in images}
    seen: dict[int, int] = {}
    for number, record in enumerate(_list(path, data, "annotations")):
        record = _checked(path, "annotations", number, record, _ANNOTATION_KEYS)
        annotation_id, image_id = record["id"], record["image_id"]
        if annotation_id in seen:  # pycocotools would keep only the later one
            raise UserError(f"{path}: annotation id {annotation_id} appears twice (annotations[{seen[annotation_id]}] "
                            f"and annotations[{number}])")
        seen[annotation_id] = number
        if image_id not in captions:
            raise UserError(f"{path}: annotations[{number}]: 'image_id' {image_id} is not in 'images'")
        if not record["caption"].strip():
            raise UserError(f"{path}: annotations[{number}]: 'caption' is empty (annotation id {annotation_id})")
        captions[image_id].append(record["caption"])
    bare = [image_id for image_id, texts in captions.items() if not texts]
    if bare:
        raise UserError(f"{path}: {len(bare)} image(s) have no caption, e.g. image id {bare[0]} "
                        f"(images[{list(images).index(bare[0])}])")
    return CaptionReferences(image_ids=list(images), captions=captions,
                             file_names={i: r["file_name"] for i, r in images.items()}, sizes=sizes)


def read_image_info(path: str | Path) -> list[int]:
    """The image ids, in file order, of an image-info file (COCO's ``image_info_test2015.json``:
    ``images`` only, no captions); a references file is read the same way."""
    path = Path(path)
    return list(_images(path, read_json(path, "image-info file")))
