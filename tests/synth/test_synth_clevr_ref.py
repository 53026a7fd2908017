"""The built-in CLEVR-Ref+ data: scenes with disjoint RLE masks, expressions whose referents follow
from the scenes, and IEP-Ref's HDF5 files and vocabulary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from nas.errors import UserError
from nas.masks import cell_coverage
from nas.rle import decode_rle
from nas.synth import SynthClevrRefConfig, generate_clevr_ref
from nas.synth.clevr_ref_iep import iep_tokenize, program_tokens, resize_mask
from nas.synth.clevr_ref_refexps import RELATION_WORDS, run_program
from nas.synth.clevr_ref_writer import SPLITS, features_path, refexps_path, scenes_path

CONFIG = SynthClevrRefConfig(seed=2, train_images=8, val_images=4, grid=8, feature_dim=16)
ATTRIBUTE_OF = {**{c: "color" for c in ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")},
                **{m: "material" for m in ("rubber", "metal")}, **{s: "size" for s in ("small", "large")}}
WORD_RELATION = {words: rel for rel, words in RELATION_WORDS.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clevr_ref") / "synth"
    generate_clevr_ref(root, CONFIG, progress=False)
    return root


def _matching(scene: dict, phrase: str, candidates: list[int]) -> list[int]:
    """The candidates fitting a noun phrase such as "large red cubes" or "metal thing"."""
    *adjectives, noun = phrase.split()
    noun = noun[:-1] if noun.endswith("s") else noun
    return [i for i in candidates if (noun == "thing" or scene["objects"][i]["shape"] == noun)
            and all(scene["objects"][i][ATTRIBUTE_OF[w]] == w for w in adjectives)]


def _referents(text: str, scene: dict) -> list[int]:
    """The referred objects re-derived from the sentence and the scene, independently of the programs."""
    everyone = list(range(len(scene["objects"])))
    relations = "|".join(WORD_RELATION)
    if m := re.fullmatch(rf"The (.+?) ({relations}) the (.+)\.", text):
        anchor = _matching(scene, m[3], everyone)
        assert len(anchor) == 1, text
        return _matching(scene, m[1], scene["relationships"][WORD_RELATION[m[2]]][anchor[0]])
    m = re.fullmatch(r"The (.+)\.", text)
    return _matching(scene, m[1], everyone)


def test_masks_are_disjoint_shapes_and_expressions_refer_to_what_they_say(dataset: Path) -> None:
    for split in SPLITS:
        scenes = json.loads(scenes_path(dataset, split).read_text())["scenes"]
        refexps = json.loads(refexps_path(dataset, split).read_text())["refexps"]
        assert [s["image_index"] for s in scenes] == list(range(len(scenes)))
        for scene in scenes:
            masks = np.stack([decode_rle(scene["obj_mask"][str(i + 1)], 320, 480)
                              for i in range(len(scene["objects"]))])
            assert masks.any(axis=(1, 2)).all() and masks.sum(0).max() == 1  # every object visible, no overlap
            for rel, opposite in (("left", "right"), ("front", "behind")):
                for i, others in enumerate(scene["relationships"][rel]):
                    assert all(i in scene["relationships"][opposite][j] for j in others)
        families = set()
        for refexp in refexps:
            scene = scenes[refexp["image_index"]]
            output = refexp["program"][-1]["_output"]
            assert output and output == _referents(refexp["refexp"], scene), refexp["refexp"]
            assert run_program(refexp["program"], scene) == output
            assert all(set(node) == {"type", "inputs", "value_inputs"} for node in refexp["program"][:-1])
            families.add(refexp["refexp_family_index"])
            if refexp["refexp_family_index"] in (1, 3):
                assert len(output) >= 2  # plural families name several objects
        assert families == {0, 1, 2, 3}


def test_grid_features_and_iep_files_follow_iep_layouts(dataset: Path) -> None:
    vocab = json.loads((dataset / "features" / "vocab.json").read_text())
    assert vocab["answer_token_to_idx"] is None
    for key in ("refexp_token_to_idx", "program_token_to_idx"):
        tokens = list(vocab[key])
        assert tokens[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"] and tokens[4:] == sorted(tokens[4:])
        assert list(vocab[key].values()) == list(range(len(tokens)))
    assert "The" in vocab["refexp_token_to_idx"]  # IEP keeps case
    scenes = json.loads(scenes_path(dataset, "val").read_text())["scenes"]
    refexps = json.loads(refexps_path(dataset, "val").read_text())["refexps"]
    with h5py.File(features_path(dataset, "val")) as f:
        assert f["features"].shape == (4, 16, 8, 8) and f["features"].dtype == np.float32
    with h5py.File(dataset / "features" / "val_refexps.h5") as f:
        assert f["answers"].shape == (len(refexps), 320, 320) and f["answers"].dtype == np.float64
        assert f["answers"].maxshape == (None, 320, 320)
        assert f["image_idxs"][:].tolist() == [r["image_index"] for r in refexps]
        assert f["refexp_families"][:].tolist() == [r["refexp_family_index"] for r in refexps]
        assert f["orig_idxs"][:].tolist() == list(range(len(refexps)))
        first = refexps[0]
        words = {i: t for t, i in vocab["refexp_token_to_idx"].items()}
        row = [words[i] for i in f["refexps"][0] if i]
        known = [t if t in vocab["refexp_token_to_idx"] else "<UNK>" for t in iep_tokenize(first["refexp"])]
        assert row == ["<START>", *known, "<END>"]  # the vocabulary is the train split's, as IEP builds it
        ops = {i: t for t, i in vocab["program_token_to_idx"].items()}
        known = [t if t in vocab["program_token_to_idx"] else "<UNK>" for t in program_tokens(first["program"])]
        assert [ops[i] for i in f["programs"][0] if i][1:-1] == known
        scene = scenes[first["image_index"]]
        union = np.zeros((320, 480), bool)
        for i in first["program"][-1]["_output"]:
            union |= decode_rle(scene["obj_mask"][str(i + 1)], 320, 480)
        np.testing.assert_allclose(f["answers"][0], resize_mask(union))


def test_iep_tokens_and_prefix_programs() -> None:
    assert iep_tokenize("The red cube, left of it; the sphere?") == \
        ["The", "red", "cube", ",", "left", "of", "it", ";", "the", "sphere"]
    program = [{"type": "scene", "inputs": [], "value_inputs": []},
               {"type": "filter_color", "inputs": [0], "value_inputs": ["red"]},
               {"type": "unique", "inputs": [1], "value_inputs": []},
               {"type": "relate", "inputs": [2], "value_inputs": ["left"]}]
    assert program_tokens(program) == ["relate[left]", "unique", "filter_color[red]", "scene"]
    assert cell_coverage(np.eye(4, dtype=bool), 2).tolist() == [[0.5, 0.0], [0.0, 0.5]]


def test_generation_is_deterministic_and_checks_its_settings(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    summary = generate_clevr_ref(again, CONFIG, progress=False)
    assert summary.num_images == {"train": 8, "val": 4}
    for split in SPLITS:
        assert scenes_path(again, split).read_bytes() == scenes_path(dataset, split).read_bytes()
        assert refexps_path(again, split).read_bytes() == refexps_path(dataset, split).read_bytes()
        with h5py.File(features_path(again, split)) as a, h5py.File(features_path(dataset, split)) as b:
            np.testing.assert_array_equal(a["features"][:], b["features"][:])
    with pytest.raises(UserError, match=r"SynthClevrRefConfig.grid=1: must be in 2..min\(image size\)"):
        SynthClevrRefConfig(grid=1)
