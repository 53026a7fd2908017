import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import UserError
from nas.features import load_region_features
from tasks.vqa.answer_norm import prep_answer
from tasks.vqa.task import VqaConfig, VqaTask


def make_task(data_dir: Path, run_dir: Path, **overrides) -> VqaTask:
    config = VqaConfig(data_dir=str(data_dir), answer_min_count=overrides.pop("answer_min_count", 2), **overrides)
    return VqaTask(config, run_dir, progress=False)


def test_loader_reads_the_released_files(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    task = make_task(tiny_vqa_dir, tmp_path, max_regions=12)
    data = task.prepare(["train", "val", "test"])
    questions = json.loads((tiny_vqa_dir / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json").read_text())
    annotations = json.loads((tiny_vqa_dir / "vqa" / "v2_mscoco_train2014_annotations.json").read_text())
    train = data.splits["train"]
    assert len(train) == len(questions["questions"])
    assert "target" not in data.splits["test"].__getitems__([0])  # test2015 has no annotations

    # Answer vocabulary: normalised multiple-choice answers seen >= min_count times, in first-seen order.
    counts = Counter(prep_answer(a["multiple_choice_answer"]) for a in annotations["annotations"])
    assert task.answers == [a for a, n in counts.items() if n >= 2]
    saved = json.loads((tmp_path / "answer_dict.json").read_text())
    assert saved[1] == {str(i): a for i, a in enumerate(task.answers)}

    batch = train.__getitems__([0, 5])
    for row, index in enumerate([0, 5]):
        question = questions["questions"][index]
        assert int(batch["question_id"][row]) == question["question_id"]
        npz = np.load(tiny_vqa_dir / "coco_extract" / "train2014" / f"COCO_train2014_{question['image_id']:012d}.jpg.npz")
        count = int(npz["num_bbox"])
        assert int(batch["num_regions"][row]) == count
        np.testing.assert_allclose(batch["features"][row, :count].numpy(), npz["x"].T)  # stored (D, N)
        assert torch.all(batch["features"][row, count:] == 0)
        np.testing.assert_allclose(batch["boxes"][row, :count].numpy(), npz["bbox"])
        assert batch["image_size"][row].tolist() == [int(npz["image_h"]), int(npz["image_w"])]
        # Soft scores: 0.3 per annotator, 1.0 from four on.
        given = Counter(prep_answer(a["answer"]) for a in annotations["annotations"][index]["answers"])
        for answer, n in given.items():
            if answer in task.answers:
                expected = {1: 0.3, 2: 0.6, 3: 0.9}.get(n, 1.0)
                assert batch["target"][row, task.answers.index(answer)].item() == pytest.approx(expected)
        assert batch["target"][row].gt(0).sum() == sum(1 for a in given if a in task.answers)
    # Tokens: spaCy tokens of the lower-cased question, punctuation dropped, in the saved vocabulary.
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    words = questions["questions"][0]["question"].lower().rstrip("?").replace(",", "").split()
    assert batch["tokens"][0, : len(words)].tolist() == [vocab[w] for w in words]


def test_both_feature_layouts_and_the_cache(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    source = tiny_vqa_dir / "coco_extract" / "val2014"
    flipped = tmp_path / "val2014"
    flipped.mkdir()
    for path in sorted(source.glob("*.npz")):
        with np.load(path) as data:
            arrays = dict(data)
        arrays["x"] = arrays["x"].T.copy()  # (N, D), as bottom-up-attention.pytorch writes
        np.savez_compressed(flipped / path.name, **arrays)
    ids = [int(p.name.split("_")[-1].split(".")[0]) for p in source.glob("*.npz")]
    cache = tmp_path / "cache"
    released = load_region_features(source, ids, 16, cache, progress=False)
    other = load_region_features(flipped, ids, 16, cache, progress=False)
    np.testing.assert_array_equal(np.asarray(released.features), np.asarray(other.features))
    assert isinstance(released.features, np.memmap)  # served from the cache as a memory map
    built = sorted(p.name for p in (cache / "features").iterdir())
    load_region_features(source, ids, 16, cache, progress=False)
    assert sorted(p.name for p in (cache / "features").iterdir()) == built  # reused, not rebuilt


def test_missing_or_broken_files_are_user_errors(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(tiny_vqa_dir, copy)
    victim = sorted((copy / "coco_extract" / "train2014").glob("*.npz"))[0]
    victim.write_bytes(b"not a zip")
    with pytest.raises(UserError, match=f"{victim.name}: unreadable feature file"):
        make_task(copy, tmp_path / "run1").prepare(["train"])
    victim.unlink()
    with pytest.raises(UserError, match="no feature file for 1 image"):
        make_task(copy, tmp_path / "run2").prepare(["train"])
    (copy / "vqa" / "v2_mscoco_val2014_annotations.json").write_text('{"annotations": [{"question_id": 1}]}')
    with pytest.raises(UserError, match=r"v2_mscoco_val2014_annotations.json: annotations\[0\] has no key 'image_id'"):
        make_task(copy, tmp_path / "run3").prepare(["val"])
    with pytest.raises(UserError, match="unknown VQA split 'dev'"):
        make_task(tiny_vqa_dir, tmp_path / "run4").prepare(["dev"])
