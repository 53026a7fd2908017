"""The built-in pre-training corpus: LXMERT corpus JSON the reader loads, obj36 TSVs whose detector labels
are the scenes' objects, the same feature prototypes as the GQA data, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.features_tsv import read_obj_tsv
from nas.synth import SynthGqaConfig, SynthPretrainConfig, generate_pretrain
from nas.synth.features import ATTRIBUTE_CLASSES, OBJECT_CLASSES, make_prototypes, region_labels
from nas.synth.pretrain_writer import SPLITS, corpus_path, feature_path
from nas.synth.statements import NUMBERS, StatementBalance, single_image_statements
from nas.synth.world import ATTRIBUTE_VALUES, sample_scene
from tasks.pretrain.corpus import read_corpus

TINY = SynthPretrainConfig(seed=2, train_images=8, val_images=3, captions_per_image=2, questions_per_image=3,
                           feature_dim=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "pretrain"
    generate_pretrain(root, TINY, progress=False)
    return root


def test_corpus_files_hold_captions_and_labelled_questions_for_every_image_of_the_tsv(corpus: Path) -> None:
    for split, images in (("mscoco_train", 8), ("mscoco_minival", 3)):
        sentences = read_corpus(corpus_path(corpus, split))
        rows = list(read_obj_tsv(feature_path(corpus, split)))
        assert len(rows) == images and {s.img_id for s in sentences} == {r.img_id for r in rows}
        captions = [s for s in sentences if s.source == "mscoco"]
        questions = [s for s in sentences if s.source == "vqa"]
        assert len(captions) == 2 * images and all(s.label is None and s.text.endswith(".") for s in captions)
        assert len(questions) == 3 * images and all(s.text.endswith("?") and len(s.label) == 1 and
                                                    list(s.label.values()) == [1.0] for s in questions)
        assert all(r.img_id.startswith("COCO_train2014_" if split == "mscoco_train" else "COCO_val2014_")
                   for r in rows)


def test_detector_labels_are_the_objects_shapes_and_colours(corpus: Path) -> None:
    rows = list(read_obj_tsv(feature_path(corpus, "mscoco_train")))
    objects = np.concatenate([r.objects_id for r in rows])
    assert set(objects.tolist()) <= set(range(len(OBJECT_CLASSES))) and len(set(objects.tolist())) >= 3
    for r in rows:  # background boxes have no attribute: confidence 0
        background = r.objects_id == OBJECT_CLASSES.index("background")
        assert (r.attrs_id[background] == ATTRIBUTE_CLASSES.index("none")).all()
        assert (r.attrs_conf[background] == 0).all() and (r.attrs_conf[~background] == 1).all()
        assert (r.objects_conf == 1).all() and len(r.objects_id) == len(r.boxes)
    # The labels of one scene, checked against its objects directly.
    scene = sample_scene(np.random.default_rng(5), min_objects=3, max_objects=5, max_distractors=2, width=480,
                         height=320)
    ids, _, attrs, _ = region_labels(scene)
    for obj in scene.objects:
        assert OBJECT_CLASSES[ids[obj.region]] == obj.shape and ATTRIBUTE_CLASSES[attrs[obj.region]] == obj.color


def test_generation_is_deterministic_and_matches_gqa_prototypes(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_pretrain(again, TINY, progress=False)
    for split in SPLITS:
        assert corpus_path(again, split).read_bytes() == corpus_path(corpus, split).read_bytes()
        assert feature_path(again, split).read_bytes() == feature_path(corpus, split).read_bytes()
    # GQA features of the same seed and size are built on the very same prototype directions.
    gqa = SynthGqaConfig(seed=TINY.seed, feature_dim=TINY.feature_dim)
    assert np.array_equal(make_prototypes(gqa.seed, gqa.feature_dim).part,
                          make_prototypes(TINY.seed, TINY.feature_dim).part)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="captions_per_image"):
        SynthPretrainConfig(captions_per_image=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a vlnas synthetic dataset"):
        generate_pretrain(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def _truth_from_scene(scene, sentence: str) -> bool:
    """Re-derive a statement's truth by reading it back against the scene's objects."""
    words = sentence.rstrip(".").split()
    assert words[:3] == ["The", "image", "contains"], sentence
    number = None
    if words[3] == "exactly":
        number, phrase = NUMBERS.index(words[4]), words[5:]
    else:
        assert words[3] == "a", sentence
        phrase = words[4:]
    *adjectives, noun = phrase
    noun = noun[:-1] if number not in (None, 1) else noun  # plural
    attrs = {next(a for a, values in ATTRIBUTE_VALUES.items() if word in values): word for word in adjectives}
    if noun != "thing":
        attrs["shape"] = noun
    count = sum(all(obj.attr(a) == v for a, v in attrs.items()) for obj in scene.objects)
    return count > 0 if number is None else count == number


def test_single_image_statements_are_true_then_false_by_the_scene() -> None:
    seen = {"exist": 0, "count": 0}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, min_objects=2, max_objects=6, max_distractors=1, width=480, height=320)
        statements = single_image_statements(scene, 6, rng, most_attributes=2)
        assert 4 <= len(statements) <= 6 and len({s for s, _ in statements}) == len(statements)
        assert [truth for _, truth in statements] == [k % 2 == 0 for k in range(len(statements))]
        for sentence, truth in statements:
            assert _truth_from_scene(scene, sentence) == truth, sentence
            seen["count" if "exactly" in sentence else "exist"] += 1
    assert min(seen.values()) > 50  # both kinds are drawn


def _majority_share(statements: list[tuple[str, bool]]) -> float:
    """Accuracy of answering each sentence with its more frequent truth value (a text-only ceiling)."""
    counts: dict[str, list[int]] = {}
    for sentence, truth in statements:
        counts.setdefault(sentence, [0, 0])[truth] += 1
    return sum(max(c) for c in counts.values()) / len(statements)


def test_balanced_statements_give_the_words_no_answer_and_stay_true_to_the_scene() -> None:
    drawn = {"plain": [], "balanced": []}
    balance = StatementBalance()
    for seed in range(300):
        scene = sample_scene(np.random.default_rng(seed), min_objects=3, max_objects=7, max_distractors=1,
                             width=480, height=320)
        drawn["plain"] += single_image_statements(scene, 6, np.random.default_rng(1000 + seed), 1)
        balanced = single_image_statements(scene, 6, np.random.default_rng(1000 + seed), 1, balance)
        assert len(balanced) == 6 and len({s for s, _ in balanced}) == 6
        for sentence, truth in balanced:
            assert _truth_from_scene(scene, sentence) == truth, sentence
        drawn["balanced"] += balanced
    # Unbalanced, "The image contains a red thing." is mostly true and "... exactly six ..." mostly false.
    assert _majority_share(drawn["plain"]) > 0.62
    assert _majority_share(drawn["balanced"]) < 0.56
    assert abs(sum(t for _, t in drawn["balanced"]) / len(drawn["balanced"]) - 0.5) < 0.03
    assert all(abs(v) <= 3 for v in balance.tally.values())


def test_statements_enter_the_corpus_as_yes_no_questions(tmp_path: Path) -> None:
    root = tmp_path / "pretrain"
    generate_pretrain(root, replace(TINY, statements_per_image=4), progress=False)
    sentences = [s for s in read_corpus(corpus_path(root, "mscoco_train")) if s.source == "statements"]
    assert len(sentences) == 4 * 8
    assert [max(s.label, key=s.label.get) for s in sentences[:4]] == ["yes", "no", "yes", "no"]
    assert all(s.text.startswith("The image contains ") for s in sentences)


def test_unbalanced_statements_are_written_as_version_1_wrote_them(tmp_path: Path) -> None:
    tallies = {}
    for balanced in (True, False):
        root = tmp_path / str(balanced)
        generate_pretrain(root, replace(TINY, train_images=60, statements_per_image=6, statement_attributes=1,
                                        balance_statements=balanced), progress=False)
        statements = [s for s in read_corpus(corpus_path(root, "mscoco_train")) if s.source == "statements"]
        tally: dict[str, int] = {}
        for sentence in statements:
            tally[sentence.text] = tally.get(sentence.text, 0) + (1 if "yes" in sentence.label else -1)
        tallies[balanced] = tally
        labels = [max(s.label, key=s.label.get) for s in statements]
        if not balanced:  # version 1: true and false alternately within each image
            assert labels == ["yes", "no"] * (len(labels) // 2)
    assert max(abs(v) for v in tallies[True].values()) <= 1
    assert max(abs(v) for v in tallies[False].values()) >= 4
