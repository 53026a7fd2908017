"""COCO-captions files: the references and image-info readers, the results writer and reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from tasks.caption.references import CaptionReferences, read_image_info, read_references
from tasks.caption.results import read_caption_results, write_caption_results


def _image(image_id: int, **extra) -> dict:
    return {"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg", "height": 480, "width": 640, **extra}


def _doc() -> dict:
    return {"info": {}, "licenses": [],
            "images": [_image(42), _image(7), {"id": 9, "file_name": "9.jpg"}],  # 9: no size, as Flickr30K files
            "annotations": [{"id": 1, "image_id": 7, "caption": "A cube."},
                            {"id": 5, "image_id": 42, "caption": "Two balls."},
                            {"id": 2, "image_id": 7, "caption": "A red block."},
                            {"id": 3, "image_id": 9, "caption": "Nothing else."}]}


def _write(tmp_path: Path, document, name: str = "captions_val2014.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _refuses(path: Path, message: str, reader=read_references) -> None:
    with pytest.raises(UserError) as error:
        reader(path)
    text = str(error.value)
    assert "\n" not in text and text == f"{path}: {message}"


def test_references_in_file_order(tmp_path: Path) -> None:
    refs = read_references(_write(tmp_path, _doc()))
    assert refs.image_ids == [42, 7, 9] and len(refs) == 3
    assert refs.captions == {42: ["Two balls."], 7: ["A cube.", "A red block."], 9: ["Nothing else."]}
    assert refs.file_names[7] == "COCO_val2014_000000000007.jpg" and refs.file_names[9] == "9.jpg"
    assert refs.sizes == {42: (480, 640), 7: (480, 640)}
    info = {"info": {}, "images": [_image(3), _image(1)]}  # COCO's image_info_test2015.json
    assert read_image_info(_write(tmp_path, info, "image_info_test2015.json")) == [3, 1]


@pytest.mark.parametrize("edit, message", [
    (lambda d: [1, 2], "expected a JSON object with 'images' (the COCO captions format), got a JSON list"),
    (lambda d: d.pop("annotations") and d, "no 'annotations' list (the COCO captions format)"),
    (lambda d: {**d, "images": {"1": {}}}, "'images' must be a list, got object {'1': {}}"),
    (lambda d: {**d, "images": []}, "'images' is empty"),
    (lambda d: {**d, "images": [_image(42), "7"]}, "images[1] must be an object, got string '7'"),
    (lambda d: {**d, "images": [_image(42), {"file_name": "x.jpg"}]}, "images[1] has no key 'id'"),
    (lambda d: {**d, "images": [_image(42), _image(7), {"id": "9", "file_name": "9.jpg"}]},
     "images[2]: 'id' must be an integer, got string '9'"),
    (lambda d: {**d, "images": [_image(42), {"id": True, "file_name": "t.jpg"}]},
     "images[1]: 'id' must be an integer, got boolean true"),
    (lambda d: {**d, "images": [_image(42), {"id": 7, "file_name": 7}]},
     "images[1]: 'file_name' must be a string, got integer 7"),
    (lambda d: {**d, "images": [_image(42), _image(7, height=0)]},
     "images[1]: 'height' must be a positive integer, got integer 0"),
    (lambda d: {**d, "images": [_image(42), _image(7, width="640")]},
     "images[1]: 'width' must be a positive integer, got string '640'"),
    (lambda d: {**d, "images": [_image(42), _image(7), _image(42)]},
     "image id 42 appears twice (images[0] and images[2])"),
    (lambda d: {**d, "annotations": d["annotations"] + [None]}, "annotations[4] must be an object, got null"),
    (lambda d: {**d, "annotations": [{"id": 1, "image_id": 7}]}, "annotations[0] has no key 'caption'"),
    (lambda d: {**d, "annotations": [{"id": 1.0, "image_id": 7, "caption": "x"}]},
     "annotations[0]: 'id' must be an integer, got number 1.0"),
    (lambda d: {**d, "annotations": [{"id": 1, "image_id": 7, "caption": ["a", "b"]}]},
     "annotations[0]: 'caption' must be a string, got list ['a', 'b']"),
    (lambda d: {**d, "annotations": d["annotations"] + [{"id": 2, "image_id": 42, "caption": "Again."}]},
     "annotation id 2 appears twice (annotations[2] and annotations[4])"),
    (lambda d: {**d, "annotations": d["annotations"] + [{"id": 8, "image_id": 404464, "caption": "A man."}]},
     "annotations[4]: 'image_id' 404464 is not in 'images'"),
    (lambda d: {**d, "annotations": d["annotations"] + [{"id": 8, "image_id": 42, "caption": "  "}]},
     "annotations[4]: 'caption' is empty (annotation id 8)"),
    (lambda d: {**d, "annotations": d["annotations"][:3]}, "1 image(s) have no caption, e.g. image id 9 (images[2])"),
])
def test_reference_errors_are_one_line(tmp_path: Path, edit, message: str) -> None:
    _refuses(_write(tmp_path, edit(_doc())), message)


def test_image_info_errors(tmp_path: Path) -> None:
    _refuses(_write(tmp_path, {"images": [_image(1), _image(1)]}), "image id 1 appears twice (images[0] and images[1])",
             read_image_info)
    _refuses(_write(tmp_path, {"annotations": []}), "no 'images' list (the COCO captions format)", read_image_info)
    _refuses(tmp_path / "absent.json", "image-info file not found", read_image_info)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(UserError, match=r"broken.json: not valid JSON \(line 1"):
        read_image_info(broken)


def test_results_round_trip_in_split_order(tmp_path: Path) -> None:
    path = tmp_path / "captions_val2014_vlnas_results.json"
    predictions = [{"image_id": np.int64(7), "caption": "a cube"}, {"image_id": 42, "caption": "two balls"},
                   {"image_id": 9, "caption": ""}]
    assert write_caption_results(path, predictions, [42, 7, 9]) == path
    assert json.loads(path.read_text()) == [{"image_id": 42, "caption": "two balls"},
                                            {"image_id": 7, "caption": "a cube"}, {"image_id": 9, "caption": ""}]
    references = read_references(_write(tmp_path, _doc()))
    assert read_caption_results(path, references) == {42: "two balls", 7: "a cube", 9: ""}
    assert read_caption_results(path) == {42: "two balls", 7: "a cube", 9: ""}
    # loadRes also scores a subset of the images; the caller decides whether that is complete
    _write(tmp_path, [{"image_id": 7, "caption": "a cube", "id": 1}], path.name)
    assert read_caption_results(path, references) == {7: "a cube"}


@pytest.mark.parametrize("predictions, message", [
    ([{"image_id": 7, "caption": "a"}], "1 of 2 images have no prediction (42)"),
    ([{"image_id": 7, "caption": "a"}, {"image_id": 42, "caption": "b"}, {"image_id": 7, "caption": "c"}],
     "1 of 2 images are predicted twice (7)"),
    ([{"image_id": 7, "caption": "a"}, {"image_id": 42, "caption": "b"}, {"image_id": 5, "caption": "c"}],
     "1 of 2 images are not in the split (5)"),
])
def test_incomplete_results_are_refused(tmp_path: Path, predictions: list[dict], message: str) -> None:
    path = tmp_path / "results.json"
    with pytest.raises(UserError) as error:
        write_caption_results(path, predictions, [42, 7])
    assert str(error.value) == f"{path}: refusing to write an incomplete submission: {message}"
    assert not path.exists()


@pytest.mark.parametrize("item, message", [
    ({"image_id": "7", "caption": "a"}, "result 1: 'image_id' must be an integer, got string '7'"),
    ({"image_id": 7, "caption": None}, "result 1: 'caption' must be a string, got null"),
    ({"image_id": 7}, "result 1 has no key 'caption'"),
    ("7: a", "result 1 must be an object {\"image_id\": integer, \"caption\": string}, got string '7: a'"),
])
def test_results_of_a_bad_type_are_refused(tmp_path: Path, item, message: str) -> None:
    path = tmp_path / "results.json"
    with pytest.raises(UserError) as error:
        write_caption_results(path, [{"image_id": 42, "caption": "b"}, item], [42, 7])
    assert str(error.value) == f"{path}: {message}" and not path.exists()
    _write(tmp_path, [{"image_id": 42, "caption": "b"}, item], path.name)
    _refuses(path, message, read_caption_results)


def test_results_file_errors(tmp_path: Path) -> None:
    references = CaptionReferences(image_ids=[42, 7], captions={42: ["x"], 7: ["y"]}, file_names={}, sizes={})
    path = tmp_path / "results.json"

    def read(p: Path) -> dict[int, str]:
        return read_caption_results(p, references)

    _write(tmp_path, {"image_id": 7, "caption": "a"}, path.name)
    _refuses(path, "expected a list of {\"image_id\": integer, \"caption\": string}, got object {'image_id': 7, "
                   "'caption': 'a'}", read)
    _write(tmp_path, [], path.name)
    _refuses(path, "the results list is empty", read)
    _write(tmp_path, [{"image_id": 7, "caption": "a"}, {"image_id": 7, "caption": "b"}], path.name)
    _refuses(path, "image_id 7 has two captions (results 0 and 1)", read)
    _write(tmp_path, [{"image_id": 7, "caption": "a"}, {"image_id": 404464, "caption": "b"}], path.name)
    _refuses(path, "result 1: image_id 404464 is not an image of the references", read)
    _refuses(tmp_path / "none.json", "caption results file not found", read)
