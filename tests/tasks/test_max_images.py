"""task.max_images (--tiny / --fast): each split keeps the samples of its first N images."""

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli.common import config_layers
from nas.cli.main import build_parser
from nas.config import resolve_config
from nas.errors import UserError
from nas.safe_pickle import load_plain_pickle
from tasks.itm.task import ItmConfig, ItmTask
from tasks.vgd.task import VgdConfig, VgdTask
from tasks.vqa.task import VqaConfig, VqaTask


def _first_images_count(image_ids: list[int], n: int) -> int:
    """How many samples are about the ``n`` smallest image ids."""
    keep = set(sorted(set(image_ids))[:n])
    return sum(i in keep for i in image_ids)


def test_vqa_keeps_the_questions_of_the_first_images(tiny_vqa_dir: Path, tmp_path: Path) -> None:
    vqa = tiny_vqa_dir / "vqa"
    files = {"train": "v2_OpenEnded_mscoco_train2014_questions.json",
             "val": "v2_OpenEnded_mscoco_val2014_questions.json",
             "test": "v2_OpenEnded_mscoco_test2015_questions.json", "vg": "VG_questions.json"}
    questions = {s: json.loads((vqa / f).read_text())["questions"] for s, f in files.items()}
    full = VqaTask(VqaConfig(data_dir=str(tiny_vqa_dir), answer_min_count=2), tmp_path / "full", progress=False)
    full.prepare(["train"])
    task = VqaTask(VqaConfig(data_dir=str(tiny_vqa_dir), answer_min_count=2, max_images=7), tmp_path / "run",
                   progress=False)
    data = task.prepare(["train", "val", "test", "vg", "train+val+vg"])
    # tiny: 4 questions per image (VG: 3 on each of its 3 images, so all of them stay)
    assert [len(data.splits[s]) for s in ("train", "val", "test", "vg", "train+val+vg")] == [28, 28, 28, 9, 65]
    first = {}
    for split, entries in questions.items():
        ids = [q["image_id"] for q in entries]
        first[split] = sorted(set(ids))[:7]
        expected = [q["question_id"] for q in entries if q["image_id"] in first[split]]  # file order kept
        dataset = data.splits[split]
        assert len(dataset) == _first_images_count(ids, 7)
        assert dataset.question_ids.tolist() == expected
    # Only those images' features were read, each folder once (vg's images are train2014's).
    read = {s.directory.name: sorted(int(i) for i in s.image_ids) for s in data.splits["train+val+vg"].sources}
    assert read == {"train2014": sorted(set(first["train"]) | set(first["vg"])), "val2014": first["val"]}
    assert [int(i) for i in data.splits["test"].sources[0].image_ids] == first["test"]
    # The vocabularies still come from the whole files: same model shape as a full run.
    assert task.answers == full.answers
    assert (tmp_path / "run" / "vocab.json").read_text() == (tmp_path / "full" / "vocab.json").read_text()


def test_vgd_keeps_the_expressions_of_the_first_images(tmp_path: Path) -> None:
    task = VgdTask(VgdConfig(synth_size="tiny", max_images=5), tmp_path / "run", progress=False)
    data = task.prepare(["train", "val"])
    refs = load_plain_pickle(Path(data.info["data_dir"]) / "refcoco" / "refs(unc).p", "refs")
    for split in ("train", "val"):
        ids = [r["image_id"] for r in refs if r["split"] == split for _ in r["sentences"]]
        first = sorted(set(ids))[:5]
        dataset = data.splits[split]
        assert len(dataset) == _first_images_count(ids, 5) < len(ids)
        assert sorted({e.image_id for e in dataset.expressions}) == first
        assert sorted(int(i) for i in dataset.features.image_ids) == first


def test_itm_keeps_the_first_images_in_file_order(tmp_path: Path) -> None:
    task = ItmTask(ItmConfig(synth_size="tiny", max_images=3), tmp_path / "run", progress=False)
    data = task.prepare(["train", "dev"])
    folder = Path(data.info["data_dir"]) / "f30k_precomp"
    for split in ("train", "dev"):
        images = np.load(folder / f"{split}_ims.npy")
        captions = (folder / f"{split}_caps.txt").read_text().splitlines()
        assert len(images) > 3
        pairs = data.splits[split].pairs
        assert len(data.splits[split]) == pairs.num_captions == 15 and pairs.num_images == 3
        np.testing.assert_array_equal(np.asarray(pairs.features.features), images[:3])
        batch = data.splits[split].__getitems__([14])  # caption 14 belongs to image 2
        np.testing.assert_allclose(batch["features"][0].numpy(), images[2])
        assert len(captions) == 5 * len(images)


@pytest.mark.parametrize("task", [VqaTask, VgdTask, ItmTask])
def test_max_images_must_be_positive(task, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"task.max_images=0: must be at least 1"):
        task(task.Config(max_images=0), tmp_path, progress=False)


@pytest.mark.parametrize("command", [["search", "--task", "itm"], ["retrain", "--genotype", "g.json"]])
def test_tiny_and_fast_flags_set_max_images(command: list[str]) -> None:
    defaults = {"task": {"name": "vgd"}, "space": {"name": "mmnas"}, "strategy": {"name": "mmnas"}}
    parser = build_parser()

    def resolved(*extra: str) -> int | None:
        return resolve_config(config_layers(parser.parse_args([*command, *extra]), defaults)).task.max_images

    assert resolved() is None
    assert resolved("--tiny") == 512
    assert resolved("--fast") == 4096
    assert resolved("--tiny", "task.max_images=100") == 100  # a dotted override still wins
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args([*command, "--tiny", "--fast"])


def test_results_file_of_a_cut_split_warns(tiny_vqa_dir: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    for max_images, warned in ((7, True), (20, False)):  # tiny's test split has 20 images
        task = VqaTask(VqaConfig(data_dir=str(tiny_vqa_dir), answer_min_count=2, max_images=max_images),
                       tmp_path / f"run{max_images}", progress=False)
        test = task.prepare(["test"]).splits["test"]
        predictions = [{"question_id": int(q), "answer": "yes"} for q in test.question_ids]
        caplog.clear()
        path = task.write_results(predictions, tmp_path / f"results{max_images}.json", test)
        assert len(json.loads(path.read_text())) == len(test)
        assert ("covers only the first 7 images of split test" in caplog.text) == warned
