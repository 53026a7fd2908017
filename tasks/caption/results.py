"""The captioning results file: ``[{"image_id": int, "caption": str}]``, one caption per image.

This is what ``COCO.loadRes`` reads (pycocoevalcap's ``captions_val2014_fakecap_results.json``).
``loadRes`` asserts only that every result's image is among the references' images; a
repeated image_id is silently kept several times. So writing refuses a missing, repeated or
extra image, and reading refuses an unknown or repeated one, naming it.
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any, Sequence

from nas.errors import UserError, described
from nas.io import atomic_write_json, read_json
from nas.task import check_complete
from tasks.caption.references import CaptionReferences

__all__ = ["read_caption_results", "write_caption_results"]


def _check_result(path: Path, index: int, item: Any) -> tuple[int, str]:
    if not isinstance(item, dict):
        raise UserError(f"{path}: result {index} must be an object {{\"image_id\": integer, \"caption\": string}}, "
                        f"got {described(item)}")
    # Integral: a model's predictions may carry numpy integers; the file gets plain ints.
    for key, kind, word in (("image_id", Integral, "an integer"), ("caption", str, "a string")):
        if key not in item:
            raise UserError(f"{path}: result {index} has no key '{key}'")
        if not isinstance(item[key], kind) or isinstance(item[key], bool):
            raise UserError(f"{path}: result {index}: '{key}' must be {word}, got {described(item[key])}")
    return int(item["image_id"]), item["caption"]


def write_caption_results(path: str | Path, predictions: list[dict[str, Any]], image_ids: Sequence[int]) -> Path:
    """Write one ``{"image_id", "caption"}`` per image of ``image_ids`` (in that order); refuse a
    prediction of a bad type, or an image missing, predicted twice or not in ``image_ids``."""
    path = Path(path)
    checked = [_check_result(path, index, item) for index, item in enumerate(predictions)]
    check_complete(path, [image_id for image_id, _ in checked], list(image_ids), "image")
    by_image = dict(checked)
    return atomic_write_json(path, [{"image_id": int(i), "caption": by_image[int(i)]} for i in image_ids], indent=None)


def read_caption_results(path: str | Path, references: CaptionReferences | None = None) -> dict[int, str]:
    """image id -> caption of a results file; with ``references``, every image must be one of theirs.

    Images the references have but the file lacks are allowed here, as ``loadRes`` allows them
    (it then scores only the images with results); the caller decides whether that is complete.
    """
    path = Path(path)
    document = read_json(path, "caption results file")
    if not isinstance(document, list):
        raise UserError(f"{path}: expected a list of {{\"image_id\": integer, \"caption\": string}}, "
                        f"got {described(document)}")
    if not document:
        raise UserError(f"{path}: the results list is empty")
    known = set(references.image_ids) if references is not None else None
    results: dict[int, str] = {}
    first: dict[int, int] = {}
    for index, item in enumerate(document):
        image_id, caption = _check_result(path, index, item)
        if image_id in results:  # loadRes would keep both captions and score the image twice
            raise UserError(f"{path}: image_id {image_id} has two captions (results {first[image_id]} and {index})")
        if known is not None and image_id not in known:
            raise UserError(f"{path}: result {index}: image_id {image_id} is not an image of the references")
        results[image_id], first[image_id] = caption, index
    return results
