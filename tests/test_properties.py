"""Property tests (hypothesis) for the parsers a user's files go through (issue 11).

Whatever the input, each parser either returns its result or raises ``UserError`` (a one-line
message); any other exception is a crash. Valid genotypes survive save -> load unchanged. The
example counts are small so the file runs in well under 30 s on two shared cores;
``benchmarks/fuzz.py`` runs the same targets for minutes.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.cli.genotype_cmd import _validated_space
from nas.config import Layer, RunConfig, TrainConfig, overrides_layer, resolve_config, yaml_layer
from nas.errors import UserError
from nas.features import _read_npz
from nas.genotype import Genotype, genotype_from_dict, load_genotype, save_genotype
from search_spaces.mmnas.ops import DECODER_OPS, ENCODER_OPS
from tasks.vgd.annotations import read_refer
from tasks.vqa.task import VqaConfig, VqaTask

REPO = Path(__file__).resolve().parent.parent
GENOTYPE = json.loads((REPO / "genotypes" / "mmnas_vqa.json").read_text())

# deadline=None: the machine is shared, so one slow example is not a failure.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON document (no NaN: NaN != NaN would break the round trip, not the parser).
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

labels = st.one_of(st.builds(lambda part, n: f"{part}/{n}", st.sampled_from(["enc", "dec", "x"]),
                             st.integers(0, 40) | st.integers(0, 10**12)),
                   st.text(max_size=10))
ops = st.sampled_from(sorted(set(ENCODER_OPS + DECODER_OPS))) | json_values


@st.composite
def mutated_genotypes(draw: st.DrawFn) -> Any:
    """The published genotype with some keys, labels and ops dropped, replaced or added."""
    data = json.loads(json.dumps(GENOTYPE))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop key", "set key", "drop label", "set label", "set choices"]))
        if action == "drop key" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "set key":
            data[draw(st.sampled_from(["format", "version", "space", "task", "choices", "provenance", "metrics",
                                       "extra"]))] = draw(json_values)
        elif action == "drop label" and isinstance(data.get("choices"), dict) and data["choices"]:
            data["choices"].pop(draw(st.sampled_from(sorted(data["choices"]))))
        elif action == "set label" and isinstance(data.get("choices"), dict):
            data["choices"][draw(labels)] = draw(ops)
        elif action == "set choices":
            data["choices"] = draw(st.dictionaries(labels, ops, max_size=6))
    return data


def check_genotype(value: Any) -> Genotype | None:
    """What ``nas genotype validate`` does with a parsed file; None when it refused it (UserError)."""
    try:
        genotype = genotype_from_dict(value, "g.json")
        _validated_space(genotype, "g.json")
    except UserError as error:
        assert str(error)  # the CLI prints it as the one line after "nas: error:"
        return None
    return genotype


@FAST
@given(json_values)
def test_any_json_value_is_a_genotype_or_a_user_error(value: Any) -> None:
    check_genotype(value)


@FAST
@given(mutated_genotypes())
def test_a_damaged_genotype_is_valid_or_a_user_error(value: Any) -> None:
    genotype = check_genotype(value)
    if genotype is not None:  # only well-formed choices get through
        assert genotype.space == "mmnas" and all(isinstance(op, str) for op in genotype.choices.values())


@st.composite
def valid_genotypes(draw: st.DrawFn) -> Genotype:
    enc, dec = draw(st.integers(1, 12)), draw(st.integers(1, 18))
    choices = {f"enc/{i}": draw(st.sampled_from(ENCODER_OPS)) for i in range(enc)}
    choices.update({f"dec/{i}": draw(st.sampled_from(DECODER_OPS)) for i in range(dec)})
    records = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    return Genotype(space="mmnas", task=draw(st.sampled_from(["vqa", "vgd", "itm"])), choices=choices,
                    provenance=draw(records), metrics=draw(records))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example's files (hypothesis reruns a test body many times per tmp_path)."""
    return tmp_path_factory.mktemp("properties")


@FILES
@given(valid_genotypes())
def test_valid_genotypes_round_trip_exactly(scratch: Path, genotype: Genotype) -> None:
    path = save_genotype(genotype, scratch / "round_trip.json")
    loaded = load_genotype(path)
    assert loaded == genotype
    assert list(loaded.choices) == list(genotype.choices)  # the order of blocks too
    assert check_genotype(loaded.to_dict()) == genotype


# ----------------------------------------------------------------------------- configs and overrides
SECTION_KEYS = ["seed", "task.name", "task.max_tokens", "task.answer_splits", "space.hidden", "space.enc_blocks",
                "space.box_features", "strategy.arch_lr", "strategy.arch_betas", "train.epochs", "train.lr",
                "train.decay_epochs", "train.device", "train.precision", "task.data_dir"]
override_keys = st.sampled_from(SECTION_KEYS) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1,
                                                        max_size=14)
override_values = st.sampled_from(["3", "-1", "1.5", "1e-4", "true", "null", "[1, 2]", "[a", "{a: 1}", "vqa",
                                   "mmnas", "'x'", "!!python/name:os.system", "9" * 5000, "[" * 400, ""]) \
    | st.text(max_size=12)
BASE = Layer("defaults", {"task": {"name": "vqa"}, "space": {"name": "mmnas"}, "strategy": {"name": "mmnas"}})


def resolve_or_refuse(layers: list[Layer]) -> RunConfig | None:
    try:
        config = resolve_config(layers)
    except UserError:
        return None
    assert isinstance(config.train, TrainConfig) and isinstance(config.seed, int)
    return config


@FAST
@given(st.lists(st.tuples(override_keys, override_values), max_size=5))
def test_random_overrides_resolve_or_are_refused(pairs: list[tuple[str, str]]) -> None:
    try:
        layer = overrides_layer([f"{key}={value}" for key, value in pairs])
    except UserError:
        return
    resolve_or_refuse([BASE, layer])


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(["seed", "task", "space", "strategy", "train", "other"]),
                                json_values | st.dictionaries(st.sampled_from(["name", "epochs", "lr", "hidden",
                                                                              "decay_epochs", "x"]), json_values),
                                max_size=4), max_size=3))
def test_random_layers_merge_or_are_refused(documents: list[dict]) -> None:
    config = resolve_or_refuse([BASE, *(Layer(f"layer{i}.yaml", d) for i, d in enumerate(documents))])
    if config is not None:  # later layers win: the config holds the last train.epochs given
        given_epochs = [d["train"]["epochs"] for d in documents if isinstance(d.get("train"), dict)
                        and "epochs" in d["train"]]
        if given_epochs:
            assert config.train.epochs == given_epochs[-1]


@FILES
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_a_yaml_file_load_or_are_refused(scratch: Path, content: bytes) -> None:
    path = scratch / "random.yaml"
    path.write_bytes(content)
    try:
        layer = yaml_layer(path)
    except UserError:
        return
    resolve_or_refuse([BASE, layer])


# ----------------------------------------------------------------------------- npz region features
def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


VALID_NPZ = npz_bytes(x=np.random.default_rng(0).random((8, 5), dtype=np.float32),
                      bbox=np.tile(np.float32([1, 2, 30, 40]), (5, 1)), num_bbox=np.int64(5),
                      image_h=np.int64(480), image_w=np.int64(640))


def read_npz_or_refuse(path: Path) -> None:
    try:
        regions, boxes, height, width = _read_npz(path, None)
    except UserError:
        return
    assert regions.dtype == np.float32 and boxes.shape == (len(regions), 4) and np.isfinite(regions).all()
    assert height > 0 and width > 0


@FILES
@given(st.integers(0, len(VALID_NPZ)), st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(1, 255)),
                                                max_size=4))
def test_a_cut_or_corrupted_npz_is_read_or_refused(scratch: Path, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_NPZ[:cut] if flips == [] else VALID_NPZ)
    for position, mask in flips:
        data[position] ^= mask
    path = scratch / "COCO_train2014_000000000001.jpg.npz"
    path.write_bytes(bytes(data))
    read_npz_or_refuse(path)


arrays = st.one_of(
    st.builds(lambda shape, dtype: np.zeros(shape, dtype), st.lists(st.integers(0, 6), max_size=3).map(tuple),
              st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64, "U3"])),
    st.builds(np.array, st.lists(st.floats(width=32) | st.integers(-2**40, 2**40), max_size=6)),
)


@FILES
@given(st.dictionaries(st.sampled_from(["x", "bbox", "image_h", "image_w", "num_bbox", "other"]), arrays))
def test_npz_with_any_keys_shapes_and_dtypes_is_read_or_refused(scratch: Path, content: dict) -> None:
    path = scratch / "COCO_train2014_000000000002.jpg.npz"
    path.write_bytes(npz_bytes(**content))
    read_npz_or_refuse(path)


# ----------------------------------------------------------------------------- VQA questions and annotations
@pytest.fixture(scope="module")
def vqa_files(tiny_vqa_dir: Path) -> tuple[bytes, bytes]:
    root = tiny_vqa_dir / "vqa"
    return ((root / "v2_OpenEnded_mscoco_val2014_questions.json").read_bytes(),
            (root / "v2_mscoco_val2014_annotations.json").read_bytes())


def read_vqa_split(root: Path) -> None:
    task = VqaTask(VqaConfig(data_dir=str(root)), root / "run", progress=False)
    try:
        split = task._read_split(root, "val")
    except UserError:
        return
    assert len({q["question_id"] for q in split.questions}) == len(split.questions)
    assert split.annotations is None or [a["question_id"] for a in split.annotations] == \
        [q["question_id"] for q in split.questions]


@FILES
@given(st.sampled_from(["questions", "annotations"]), st.floats(0, 1), st.lists(st.integers(0, 10**6), max_size=3))
def test_cut_or_corrupted_vqa_files_are_read_or_refused(scratch: Path, vqa_files: tuple[bytes, bytes], which: str,
                                                        fraction: float, flips: list[int]) -> None:
    questions, annotations = vqa_files
    spoiled = bytearray(questions if which == "questions" else annotations)
    if flips:
        for position in flips:
            spoiled[position % len(spoiled)] = (spoiled[position % len(spoiled)] + 1 + position) % 256
    else:
        del spoiled[int(fraction * len(spoiled)):]
    write_vqa(scratch, bytes(spoiled) if which == "questions" else questions,
              bytes(spoiled) if which == "annotations" else annotations)
    read_vqa_split(scratch)


@st.composite
def record_changes(draw: st.DrawFn) -> list[tuple[str, int, str, Any]]:
    return draw(st.lists(st.tuples(st.sampled_from(["questions", "annotations"]), st.integers(0, 79),
                                   st.sampled_from(["question_id", "image_id", "question", "multiple_choice_answer",
                                                    "answers", "drop", "duplicate"]),
                                   json_values), min_size=1, max_size=3))


@FILES
@given(record_changes())
def test_vqa_records_with_dropped_or_mistyped_keys_are_read_or_refused(
        scratch: Path, vqa_files: tuple[bytes, bytes], changes: list[tuple[str, int, str, Any]]) -> None:
    documents = {"questions": json.loads(vqa_files[0]), "annotations": json.loads(vqa_files[1])}
    for which, index, key, value in changes:
        records = documents[which][which]
        record = records[index % len(records)]
        if key == "drop":
            record.pop(next(iter(record)), None)
        elif key == "duplicate":
            records.append(dict(record))
        else:
            record[key] = value
    write_vqa(scratch, json.dumps(documents["questions"]).encode(), json.dumps(documents["annotations"]).encode())
    read_vqa_split(scratch)


def write_vqa(root: Path, questions: bytes, annotations: bytes) -> None:
    (root / "vqa").mkdir(exist_ok=True)
    (root / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").write_bytes(questions)
    (root / "vqa" / "v2_mscoco_val2014_annotations.json").write_bytes(annotations)


# ----------------------------------------------------------------------------- refs pickles
REFS = [{"ref_id": 0, "ann_id": 7, "image_id": 3, "split": "train",
         "sentences": [{"sent_id": 0, "sent": "the red cube"}, {"sent_id": 1, "sent": "left one"}]}]
INSTANCES = {"annotations": [{"id": 7, "bbox": [1, 2, 30, 40]}]}


@FILES
@given(st.integers(0, 400), st.lists(st.tuples(st.integers(0, 399), st.integers(1, 255)), max_size=3),
       st.lists(json_values, max_size=2))
def test_cut_or_corrupted_refs_are_read_or_refused(scratch: Path, cut: int, flips: list[tuple[int, int]],
                                                   extra: list[Any]) -> None:
    data = bytearray(pickle.dumps(REFS + extra, protocol=2))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    (scratch / "refcoco").mkdir(exist_ok=True)
    (scratch / "refcoco" / "refs(unc).p").write_bytes(bytes(data[:cut] if not flips else data))
    (scratch / "refcoco" / "instances.json").write_text(json.dumps(INSTANCES))
    try:
        splits = read_refer(scratch, "refcoco", "unc")
    except UserError:
        return
    assert all(e.box_xywh == (1.0, 2.0, 30.0, 40.0) for e in splits.get("train", []))
