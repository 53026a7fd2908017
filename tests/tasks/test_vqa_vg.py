"""The vg training split: MCAN's Visual Genome augmentation files beside the VQA v2 files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from tasks.vqa.task import VqaConfig, VqaTask


def make_task(data_dir: Path, run_dir: Path, **overrides) -> VqaTask:
    return VqaTask(VqaConfig(data_dir=str(data_dir), answer_min_count=2, **overrides), run_dir, progress=False)


def _records(path: Path, key: str) -> list[dict]:
    return json.loads(path.read_text())[key]


def _npz(root: Path, folder: str, image_id: int) -> dict[str, np.ndarray]:
    with np.load(root / "coco_extract" / folder / f"COCO_{folder}_{image_id:012d}.jpg.npz") as z:
        return {k: z[k] for k in z.files}


def test_train_val_vg_adds_the_vg_questions(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    vqa = tiny_vqa_dir / "vqa"
    train = _records(vqa / "v2_OpenEnded_mscoco_train2014_questions.json", "questions")
    val = _records(vqa / "v2_OpenEnded_mscoco_val2014_questions.json", "questions")
    vg = _records(vqa / "VG_questions.json", "questions")
    assert (len(train), len(val), len(vg)) == (240, 80, 9)  # tiny: 60 and 20 images x 4; 3 images x 3

    task = make_task(tiny_vqa_dir, tmp_path, train_split="train+val+vg")
    data = task.prepare(["train+val+vg", "train+val", "vg"])
    joined, plain, alone = data.splits["train+val+vg"], data.splits["train+val"], data.splits["vg"]
    assert len(plain) == 320 and len(joined) == 329 and len(alone) == 9
    # Samples in file order: train, then val, then vg.
    expected = [q["question_id"] for q in train + val + vg]
    assert joined.question_ids.tolist() == expected

    # A batch mixing all three parts (and so two feature folders and several region counts)
    # gathers each image's own features and the vg answers' soft scores.
    annotations = {a["question_id"]: a for a in _records(vqa / "VG_annotations.json", "annotations")}
    picks = [0, 250, 320, 328, 5]
    batch = joined.__getitems__(picks)
    for row, index in enumerate(picks):
        question = expected[index]
        image_id = (train + val + vg)[index]["image_id"]
        folder = "val2014" if 240 <= index < 320 else "train2014"  # vg images are train images
        npz = _npz(tiny_vqa_dir, folder, image_id)
        count = int(npz["num_bbox"])
        assert int(batch["question_id"][row]) == question and int(batch["num_regions"][row]) == count
        np.testing.assert_allclose(batch["features"][row, :count].numpy(), npz["x"].T)
        assert not batch["features"][row, count:].any()
        if question in annotations:
            best = task.answers.index(annotations[question]["multiple_choice_answer"])
            assert batch["target"][row, best].item() == pytest.approx(1.0)

    # MmNas's vocabulary covers every question file, VG's included.
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    words = {w for q in vg for w in q["question"].lower().rstrip("?").split()}
    assert words <= set(vocab)


def test_vg_features_are_found_in_any_coco_folder(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(tiny_vqa_dir, copy)
    questions_path, annotations_path = copy / "vqa" / "VG_questions.json", copy / "vqa" / "VG_annotations.json"
    questions, annotations = json.loads(questions_path.read_text()), json.loads(annotations_path.read_text())
    val_image = _records(copy / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json", "questions")[0]["image_id"]
    questions["questions"][0]["image_id"] = annotations["annotations"][0]["image_id"] = val_image
    questions_path.write_text(json.dumps(questions))
    annotations_path.write_text(json.dumps(annotations))
    batch = make_task(copy, tmp_path / "run").prepare(["vg"]).splits["vg"].__getitems__([0])
    npz = _npz(copy, "val2014", val_image)
    np.testing.assert_allclose(batch["features"][0, :int(npz["num_bbox"])].numpy(), npz["x"].T)

    questions["questions"][0]["image_id"] = annotations["annotations"][0]["image_id"] = 999_999_999
    questions_path.write_text(json.dumps(questions))
    annotations_path.write_text(json.dumps(annotations))  # the two files must agree on the image
    with pytest.raises(UserError, match="no feature file for vg image_id 999999999 .* in train2014, val2014, "
                                        "test2015"):
        make_task(copy, tmp_path / "run2").prepare(["vg"])


@pytest.mark.parametrize("missing", ["VG_questions.json", "VG_annotations.json"])
def test_missing_vg_file_is_a_one_line_error(tiny_vqa_dir: Path, tmp_path: Path, missing: str) -> None:
    copy = tmp_path / "data"
    shutil.copytree(tiny_vqa_dir, copy)
    (copy / "vqa" / missing).unlink()
    task = make_task(copy, tmp_path / "run", train_split="train+val+vg")
    with pytest.raises(UserError) as error:
        task.prepare(["train+val+vg", "val"])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"task.train_split=train+val+vg: {copy / 'vqa' / missing} not found")
    # Without a vg split the files are optional: MCAN's layout without the augmentation still loads.
    assert len(make_task(copy, tmp_path / "run2").prepare(["train+val"]).splits["train+val"]) == 320
