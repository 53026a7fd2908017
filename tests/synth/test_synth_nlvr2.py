"""The built-in NLVR2 data: lil-lab JSON lines and LXMERT TSVs whose labels follow from the scenes."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from nas.errors import UserError
from nas.features_tsv import read_obj_tsv
from nas.synth import SynthNlvr2Config, generate_nlvr2
from nas.synth.features import ATTRIBUTE_CLASSES, OBJECT_CLASSES
from nas.synth.nlvr2_writer import SPLITS, annotations_path, feature_path
from tasks.nlvr2.annotations import read_annotations
from tasks.nlvr2.metric import consistency_key

CONFIG = SynthNlvr2Config(seed=3, train_sets=12, dev_sets=4, test1_sets=4, pairs_per_set=4, sentences_per_set=2,
                          feature_dim=16)
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
ATTRIBUTE_OF = {**{c: "color" for c in ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")},
                **{m: "material" for m in ("rubber", "metal")}, **{s: "size" for s in ("small", "large")}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nlvr2") / "synth"
    generate_nlvr2(root, CONFIG, progress=False)
    return root


def _matches(obj: dict, phrase: str) -> bool:
    """Whether a scene object fits a noun phrase such as "large red cubes" or "metal thing"."""
    *adjectives, noun = phrase.split()
    noun = noun[:-1] if noun.endswith("s") else noun
    if noun != "thing" and obj["shape"] != noun:
        return False
    return all(obj[ATTRIBUTE_OF[word]] == word for word in adjectives)


def _truth(sentence: str, left: list[dict], right: list[dict]) -> bool:
    """The label re-derived from the two scenes by reading the sentence, independently of the writer."""
    def count(scene: list[dict], phrase: str) -> int:
        return sum(_matches(obj, phrase) for obj in scene)

    side = {"left": left, "right": right}
    if m := re.fullmatch(r"The (left|right) image contains a (.+)\.", sentence):
        return count(side[m[1]], m[2]) > 0
    if m := re.fullmatch(r"Both images contain a (.+)\.", sentence):
        return count(left, m[1]) > 0 and count(right, m[1]) > 0
    if m := re.fullmatch(r"Exactly one image contains a (.+)\.", sentence):
        return (count(left, m[1]) > 0) != (count(right, m[1]) > 0)
    if m := re.fullmatch(r"The (left|right) image contains exactly (\w+) (.+)\.", sentence):
        return count(side[m[1]], m[3]) == NUMBERS[m[2]]
    if m := re.fullmatch(r"There are more (.+) in the (left|right) image than in the (left|right) image\.", sentence):
        return count(side[m[2]], m[1]) > count(side[m[3]], m[1])
    if m := re.fullmatch(r"The two images contain (\w+) (.+) in total\.", sentence):
        return count(left, m[2]) + count(right, m[2]) == NUMBERS[m[1]]
    raise AssertionError(f"unknown statement {sentence!r}")


def test_files_parse_with_the_released_readers_and_every_label_follows_from_the_scenes(dataset: Path) -> None:
    scenes = json.loads((dataset / "synth_meta.json").read_text())["scenes"]
    for split, tsv in SPLITS:
        examples = read_annotations(annotations_path(dataset, split))
        sets = {"train": 12, "dev": 4, "test1": 4}[split]
        assert len(examples) == sets * 4 * 2 and feature_path(dataset, split).name == tsv
        rows = {r.img_id: r for r in read_obj_tsv(feature_path(dataset, split))}
        assert len(rows) == sets * 4 * 2 and all(r.features.shape[1] == 16 for r in rows.values())
        for example in examples:
            assert example.identifier.startswith(f"{split}-") and example.label is not None
            assert {example.left_image, example.right_image} <= rows.keys()
            # Every object of the scene is one region row of its image.
            assert len(scenes[example.left_image]) <= rows[example.left_image].boxes.shape[0]
            assert _truth(example.sentence, scenes[example.left_image], scenes[example.right_image]) == example.label
        first = json.loads(annotations_path(dataset, split).read_text().splitlines()[0])
        assert first["label"] in ("True", "False") and {"left_url", "right_url", "synset", "writer"} <= first.keys()
        assert ("directory" in first) == (split == "train")


def test_the_label_columns_name_each_objects_shape_and_colour(dataset: Path) -> None:
    """As LXMERT's obj36 files carry the detector's classes, the regions of objects carry theirs
    (after an edit too); parts and background boxes get the extra classes."""
    scenes = json.loads((dataset / "synth_meta.json").read_text())["scenes"]
    for split, _ in SPLITS:
        for row in read_obj_tsv(feature_path(dataset, split)):
            objects = scenes[row.img_id]
            for obj in objects:
                assert OBJECT_CLASSES[row.objects_id[obj["region"]]] == obj["shape"]
                assert ATTRIBUTE_CLASSES[row.attrs_id[obj["region"]]] == obj["color"]
            others = sorted(set(range(len(row.boxes))) - {obj["region"] for obj in objects})
            assert {OBJECT_CLASSES[k] for k in row.objects_id[others]} <= {"part", "background"}
            assert (row.objects_conf == 1).all()


def test_each_sentence_is_true_for_half_of_its_pairs(dataset: Path) -> None:
    for split, _ in SPLITS:
        sentences: dict[str, list[bool]] = defaultdict(list)
        texts: dict[str, set[str]] = defaultdict(set)
        for example in read_annotations(annotations_path(dataset, split)):
            sentences[consistency_key(example.identifier)].append(example.label)
            texts[consistency_key(example.identifier)].add(example.sentence)
        assert len(sentences) == {"train": 12, "dev": 4, "test1": 4}[split] * 2
        assert all(len(labels) == 4 and sum(labels) == 2 for labels in sentences.values())
        assert all(len(t) == 1 for t in texts.values())  # one sentence per consistency group


def test_generation_is_deterministic_and_reused(dataset: Path, tmp_path: Path) -> None:
    again = generate_nlvr2(tmp_path / "again", CONFIG, progress=False)
    for split, _ in SPLITS:
        assert annotations_path(again.root, split).read_bytes() == annotations_path(dataset, split).read_bytes()
        assert feature_path(again.root, split).read_bytes() == feature_path(dataset, split).read_bytes()
    assert again.num_true == {"train": 48, "dev": 16, "test1": 16}
    stamp = annotations_path(again.root, "dev").stat().st_mtime_ns
    assert generate_nlvr2(tmp_path / "again", CONFIG, progress=False).num_examples == again.num_examples
    assert annotations_path(again.root, "dev").stat().st_mtime_ns == stamp  # reused, not rewritten
    other = generate_nlvr2(tmp_path / "other", SynthNlvr2Config(seed=4, train_sets=12, dev_sets=4, test1_sets=4,
                                                                feature_dim=16), progress=False)
    assert annotations_path(other.root, "dev").read_bytes() != annotations_path(dataset, "dev").read_bytes()


def test_phrase_attributes_bounds_the_descriptions(tmp_path: Path) -> None:
    config = SynthNlvr2Config(train_sets=6, dev_sets=1, test1_sets=1, feature_dim=8, phrase_attributes=1)
    root = generate_nlvr2(tmp_path / "one", config, progress=False).root
    for example in read_annotations(annotations_path(root, "train")):
        words = set(example.sentence.rstrip(".").split())
        named = [w for w in words if w in ATTRIBUTE_OF] + [w for w in words if w.rstrip("s") in ("cube", "sphere",
                                                                                                 "cylinder")]
        assert len(named) == 1, example.sentence  # one attribute: "red thing", "cubes", "metal thing"


def test_families_limit_the_statements_drawn(tmp_path: Path) -> None:
    config = SynthNlvr2Config(train_sets=8, dev_sets=1, test1_sets=1, feature_dim=8,
                              families=["both_exist", "one_exist"])
    summary = generate_nlvr2(tmp_path / "two", config, progress=False)
    assert summary.families["both_exist"] > 0 and summary.families["one_exist"] > 0
    assert sum(summary.families.values()) == summary.families["both_exist"] + summary.families["one_exist"]
    sentences = {e.sentence for e in read_annotations(annotations_path(summary.root, "train"))}
    assert all(s.startswith(("Both images contain a ", "Exactly one image contains a ")) for s in sentences)


def test_later_pairs_of_a_set_are_edits_of_its_first(dataset: Path) -> None:
    scenes = json.loads((dataset / "synth_meta.json").read_text())["scenes"]
    for set_id in range(12):
        for side in (0, 1):
            first = scenes[f"train-{set_id}-0-img{side}"]
            for pair in (1, 2, 3):
                other = scenes[f"train-{set_id}-{pair}-img{side}"]
                assert [o["region"] for o in other] == [o["region"] for o in first]
                assert [o["size"] for o in other] == [o["size"] for o in first]
                changed = sum(o != f for o, f in zip(other, first))
                assert 1 <= changed <= CONFIG.set_edits


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"SynthNlvr2Config.pairs_per_set=1: must be in 2..8"):
        SynthNlvr2Config(pairs_per_set=1)
    with pytest.raises(UserError, match=r"SynthNlvr2Config.phrase_attributes=0: must be in 1..4"):
        SynthNlvr2Config(phrase_attributes=0)
    with pytest.raises(UserError, match=r"SynthNlvr2Config.families=\['count'\]: must be distinct names from side_exist, "):
        SynthNlvr2Config(families=["count"])
    with pytest.raises(UserError, match=r"SynthNlvr2Config.families=\['more', 'more'\]: must be distinct"):
        SynthNlvr2Config(families=["more", "more"])
