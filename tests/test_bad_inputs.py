"""Every kind of input, given bad: one ``nas: error:`` line naming file, record or key, what was expected
and what was found, exit status 2, no traceback (issue 11). docs/bad_inputs.md lists these cases.

Each case writes its bad file under ``tmp_path`` (most start from a copy of a tiny built-in dataset)
and runs the real command in-process. The expected strings are substrings of the one error line;
``{name}`` placeholders are filled from what the case's setup wrote.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from nas.cli.main import main

REPO = Path(__file__).resolve().parent.parent
GENOTYPE = json.loads((REPO / "genotypes" / "mmnas_vqa.json").read_text())

Q_TRAIN = "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
A_TRAIN = "vqa/v2_mscoco_train2014_annotations.json"
REFS = "refcoco/refs(unc).p"
INSTANCES = "refcoco/instances.json"
SIMREC = "anns/refcoco.json"
PRECOMP = "f30k_precomp"


@dataclass(frozen=True)
class Case:
    id: str
    # (tmp_path, built-in dataset folders by task, placeholders to fill) -> the nas argv
    setup: Callable[[Path, dict[str, Path], dict[str, str]], list[str]]
    expected: tuple[str, ...]


@pytest.fixture(scope="module")
def sources(tiny_vqa_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from nas.synth import SynthReferConfig, SynthScanConfig, generate_refer, generate_scan
    from tasks.itm.task import SYNTH_SIZES as ITM_SIZES
    from tasks.vgd.task import SYNTH_SIZES as VGD_SIZES

    root = tmp_path_factory.mktemp("bad-input-sources")
    generate_refer(root / "vgd", SynthReferConfig(seed=0, **VGD_SIZES["tiny"]), progress=False)
    generate_scan(root / "itm", SynthScanConfig(seed=0, **ITM_SIZES["tiny"]), progress=False)
    return {"vqa": tiny_vqa_dir, "vgd": root / "vgd", "itm": root / "itm"}


# ----------------------------------------------------------------------------- building bad files
Edit = Callable[[Path, dict[str, str]], None]  # (copied dataset folder, placeholders) -> None


def search_on(task: str, edit: Edit, *extra: str) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """Copy the task's tiny dataset, spoil it with ``edit``, and run ``nas search`` on it."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        data = tmp / "data"
        shutil.copytree(sources[task], data)
        edit(data, names)
        return ["search", "--task", task, "--data", str(data), "--config", "smoke", "--out", str(tmp / "run"),
                "--quiet", "train.threads=1", f"task.cache_dir={tmp / 'cache'}", *extra]

    return setup


def json_edit(relative: str, change: Callable[[Any], Any]) -> Edit:
    """Rewrite a JSON file with ``change(data)``; a non-None return value replaces the whole document."""

    def edit(data: Path, names: dict[str, str]) -> None:
        path = data / relative
        document = json.loads(path.read_text())
        result = change(document)
        path.write_text(json.dumps(document if result is None else result))

    return edit


def bytes_edit(relative: str, change: Callable[[bytes], bytes]) -> Edit:
    def edit(data: Path, names: dict[str, str]) -> None:
        path = data / relative
        path.write_bytes(change(path.read_bytes()))

    return edit


def refs_edit(change: Callable[[list], Any]) -> Edit:
    """Rewrite refer's pickle (protocol 2, as released) with ``change(refs)``."""

    def edit(data: Path, names: dict[str, str]) -> None:
        path = data / REFS
        refs = pickle.loads(path.read_bytes())
        result = change(refs)
        path.write_bytes(pickle.dumps(refs if result is None else result, protocol=2))

    return edit


def npz_edit(change: Callable[[dict[str, np.ndarray]], Any]) -> Edit:
    """Rewrite the first train2014 feature file with ``change(arrays)``; bytes returned replace the file."""

    def edit(data: Path, names: dict[str, str]) -> None:
        path = sorted((data / "coco_extract" / "train2014").glob("*.npz"))[0]
        names["npz"] = path.name
        with np.load(path) as archive:
            arrays = dict(archive)
        result = change(arrays)
        if isinstance(result, bytes):
            path.write_bytes(result)
        else:
            np.savez_compressed(path, **arrays)

    return edit


def npz_bytes_edit(change: Callable[[bytes], bytes]) -> Edit:
    def edit(data: Path, names: dict[str, str]) -> None:
        path = sorted((data / "coco_extract" / "train2014").glob("*.npz"))[0]
        names["npz"] = path.name
        path.write_bytes(change(path.read_bytes()))

    return edit


def npy_edit(name: str, change: Callable[[np.ndarray], Any]) -> Edit:
    def edit(data: Path, names: dict[str, str]) -> None:
        path = data / PRECOMP / name
        result = change(np.load(path))
        if isinstance(result, bytes):
            path.write_bytes(result)
        else:
            np.save(path, result)

    return edit


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_of(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def set_field(key: str, index: int, field: str, value: Any) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        document[key][index][field] = value

    return change


def genotype_command(*command: str, content: Any = None, raw: bytes | None = None
                     ) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """Write a genotype file and run ``nas genotype <command> FILE`` (or retrain with it)."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        path = tmp / "g.json"
        path.write_bytes(raw if raw is not None else json.dumps(content).encode())
        if command[0] == "retrain":
            return ["retrain", "--genotype", str(path), "--config", "smoke", "--out", str(tmp / "run"), "--quiet",
                    "train.threads=1"]
        return [*command, str(path)]

    return setup


def genotype_with(**fields: Any) -> dict:
    return {**GENOTYPE, **fields}


def choices_with(**choices: str) -> dict:
    return {**GENOTYPE, "choices": {**GENOTYPE["choices"], **choices}}


def arch_file(content: Any, *options: str) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        path = tmp / "arch.json"
        path.write_text(json.dumps(content))
        if "--from-nni" in options:
            return ["genotype", "convert", "--from-nni", str(path), "--task", "vqa", "--out", str(tmp / "g.json")]
        return ["genotype", "convert", str(path), "--task", "vqa", "--out", str(tmp / "g.json")]

    return setup


def config_file(text: str | bytes, *overrides: str) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """``nas search`` with the smoke config, then a bad experiment file and/or overrides."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        path = tmp / "bad.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return ["search", "--task", "vqa", "--data", str(sources["vqa"]), "--config", "smoke", "--config", str(path),
                "--out", str(tmp / "run"), "--quiet", "train.threads=1", *overrides]

    return setup


def run_dir_file(name: str, content: Any) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """A run directory that already holds a (bad) saved vocabulary or answer dictionary."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        (tmp / "run").mkdir()
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        (tmp / "run" / name).write_bytes(raw)
        return ["search", "--task", "vqa", "--data", str(sources["vqa"]), "--config", "smoke", "--out",
                str(tmp / "run"), "--quiet", "train.threads=1"]

    return setup


def word_vectors(content: bytes) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        (tmp / "glove.txt").write_bytes(content)
        return ["search", "--task", "vqa", "--data", str(sources["vqa"]), "--config", "smoke", "--out",
                str(tmp / "run"), "--quiet", "train.threads=1", f"task.word_vectors={tmp / 'glove.txt'}"]

    return setup


def board_run(files: dict[str, str]) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """``nas board`` on a run folder holding ``files``."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        (tmp / "run").mkdir()
        for name, text in files.items():
            (tmp / "run" / name).write_text(text)
        return ["board", str(tmp / "run"), "--no-serve", "--logdir", str(tmp / "board")]

    return setup


SMOKE_CONFIG = {"task": {"name": "vqa", "synth_size": "tiny"}, "space": {"name": "mmnas", "hidden": 32,
                "head_dim": 16, "relation_dim": 16}, "strategy": {"name": "mmnas"}}


def checkpoint(state: Any = None, raw: bytes | None = None,
               cut: bool = False) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """``nas submit`` on a (bad) checkpoint inside a run directory that has its vocabulary."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        path = tmp / "run" / "checkpoints" / "best.pt"
        path.parent.mkdir(parents=True)
        (tmp / "run" / "vocab.json").write_text(json.dumps({"PAD": 0, "UNK": 1, "CLS": 2}))
        if raw is not None:
            path.write_bytes(raw)
        else:
            torch.save(state, path)
            if cut:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ["submit", "--checkpoint", str(path), "--quiet"]

    return setup


def resume_with_saved_config(text: str) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """A run directory with a checkpoint and a damaged config.yaml, run again (it would resume)."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        (tmp / "run").mkdir()
        (tmp / "run" / "search_checkpoint.pt").write_bytes(b"x")
        (tmp / "run" / "config.yaml").write_text(text)
        return ["search", "--task", "vqa", "--data", str(sources["vqa"]), "--config", "smoke", "--out",
                str(tmp / "run"), "--quiet", "train.threads=1"]

    return setup


def evaluate_vgd(edit: Edit, predictions: Any = None) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    """``nas evaluate --task vgd`` on a spoiled copy of the refer files and an empty-but-valid predictions file."""

    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        data = tmp / "data"
        shutil.copytree(sources["vgd"], data)
        edit(data, names)
        (tmp / "predictions.json").write_text(json.dumps(predictions if predictions is not None else []))
        return ["evaluate", "--task", "vgd", "--predictions", str(tmp / "predictions.json"), "--refs",
                str(data / REFS), "--instances", str(data / INSTANCES), "--split", "val"]

    return setup


def evaluate_vqa(questions: Any, annotations: Any, results: Any
                 ) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        paths = []
        for name, content in (("q.json", questions), ("a.json", annotations), ("r.json", results)):
            (tmp / name).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
            paths.append(str(tmp / name))
        return ["evaluate", "--task", "vqa", "--questions", paths[0], "--annotations", paths[1], "--results", paths[2]]

    return setup


def evaluate_itm(raw: bytes) -> Callable[[Path, dict[str, Path], dict[str, str]], list[str]]:
    def setup(tmp: Path, sources: dict[str, Path], names: dict[str, str]) -> list[str]:
        (tmp / "sims.npy").write_bytes(raw)
        return ["evaluate", "--task", "itm", "--sims", str(tmp / "sims.npy")]

    return setup


def drop(key: str) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        del document[key]

    return change


def corrupt_deflate(data: bytes) -> bytes:
    """Flip bytes inside the first member's compressed data (its header stays valid)."""
    spoiled = bytearray(data)
    for index in range(80, 120):
        spoiled[index] ^= 0xFF
    return bytes(spoiled)


VOCAB = {"PAD": 0, "UNK": 1, "CLS": 2, "what": 3}
VQA_Q = {"questions": [{"question_id": 1, "image_id": 1, "question": "what?"}]}
VQA_A = {"annotations": [{"question_id": 1, "image_id": 1, "question_type": "what", "answer_type": "other",
                          "multiple_choice_answer": "yes", "answers": [{"answer": "yes", "answer_id": 1}]}]}

# ----------------------------------------------------------------------------- the table
CASES = [
    # --- genotype JSON (nas/genotype.py) ---
    Case("genotype-truncated", genotype_command("genotype", "validate", raw=json.dumps(GENOTYPE).encode()[:100]),
         ("g.json: not valid JSON (line 1, column",)),
    Case("genotype-not-utf8", genotype_command("genotype", "validate", raw=b'{"format": "\xff"}'),
         ("g.json: not a UTF-8 text file",)),
    Case("genotype-nested-too-deep", genotype_command("genotype", "validate", raw=b"[" * 100_000),
         ("g.json: genotype file is nested too deeply to parse",)),
    Case("genotype-5000-digit-number",
         genotype_command("genotype", "validate", raw=b'{"version": ' + b"9" * 5000 + b"}"),
         ("g.json: genotype file holds a value JSON cannot read (Exceeds the limit (4300 digits)",)),
    Case("genotype-top-level-list", genotype_command("genotype", "validate", content=[]),
         ("g.json: a genotype must be a JSON object, got list",)),
    Case("genotype-version-true", genotype_command("genotype", "validate", content=genotype_with(version=True)),
         ("g.json: unknown genotype version True; this vlnas reads version 1",)),
    Case("genotype-version-float", genotype_command("genotype", "validate", content=genotype_with(version=1.0)),
         ("g.json: unknown genotype version 1.0; this vlnas reads version 1",)),
    Case("genotype-missing-format", genotype_command("genotype", "show", content={**GENOTYPE, "format": None}),
         ("g.json: 'format' is None, expected 'vlnas-genotype'",)),
    Case("genotype-unknown-key", genotype_command("genotype", "validate", content=genotype_with(extra=1)),
         ("g.json: unknown key(s) extra. Valid keys: choices, format",)),
    Case("genotype-space-not-string", genotype_command("genotype", "validate", content=genotype_with(space=3)),
         ("g.json: 'space' must be a non-empty string, got 3",)),
    Case("genotype-choices-list", genotype_command("genotype", "validate", content=genotype_with(choices=[])),
         ("g.json: 'choices' must be a non-empty object of label -> op",)),
    Case("genotype-op-not-string", genotype_command("genotype", "validate", content=choices_with(**{"enc/0": 3})),
         ("g.json: choices['enc/0'] must be an op name (string), got 3",)),
    Case("genotype-unknown-op", genotype_command("genotype", "validate", content=choices_with(**{"dec/2": "conv"})),
         ("g.json: unknown op 'conv' for dec/2. Valid ops: self_att, rel_self_att, guided_att, feed_forward",)),
    Case("genotype-provenance-list", genotype_command("genotype", "validate", content=genotype_with(provenance=[])),
         ("g.json: 'provenance' must be an object, got []",)),
    # A label 10^11 blocks deep made validation build 10^11 choices (it hung); a 5000-digit one crashed int().
    Case("genotype-label-too-deep", genotype_command("genotype", "validate",
                                                     content=choices_with(**{"dec/99999999999": "self_att"})),
         ("g.json: unexpected label(s) dec/99999999999. Expected labels: enc/0..11, dec/0..17",)),
    Case("genotype-label-5000-digits", genotype_command("retrain", content=choices_with(**{"enc/" + "9" * 5000: "x"})),
         ("g.json: unexpected label(s) enc/99999", "Expected labels: enc/0..11, dec/0..17")),
    Case("genotype-missing-labels", genotype_command("genotype", "validate", content={**GENOTYPE, "choices": {
        k: v for k, v in GENOTYPE["choices"].items() if k != "dec/4"}}),
         ("g.json: missing label(s) dec/4. Expected labels: enc/0..11, dec/0..17",)),
    Case("genotype-unknown-space", genotype_command("genotype", "validate", content=genotype_with(space="darts")),
         ("unknown search space 'darts'. Available: lxmert, mmnas",)),
    Case("mmnas-arch-part-not-list", arch_file({"epoch0": {"enc": 5, "dec": []}}),
         ("arch.json: epoch0.enc must be a list of blocks, got integer",)),
    Case("mmnas-arch-op-unhashable", arch_file({"epoch0": {"enc": [[["self_att_64"]]], "dec": []}}),
         ("arch.json: epoch0.enc[0]: unknown MmNas op ['self_att_64']. Supported: self_att_64",)),
    Case("mmnas-arch-zero-padded-epoch", arch_file({"epoch01": {"enc": [["self_att_64"]], "dec": [[]]}}),
         ("arch.json: epoch1.dec[0] must list exactly one op", "got []")),
    Case("nni-export-label-too-deep", arch_file({"enc/99999999999": "self_att"}, "--from-nni"),
         ("arch.json: space.enc_blocks=0: must be between 1 and 1024 (a genotype sets it from its highest enc/ "
          "label)",)),

    # --- YAML experiment files and dotted overrides (nas/config.py) ---
    Case("yaml-not-utf8", config_file(b"train:\n  epochs: \xff\n"),
         ("bad.yaml: not a UTF-8 text file (bad byte at offset 17)",)),
    Case("yaml-syntax", config_file("train:\n\tepochs: 3\n"),
         ("bad.yaml: not valid YAML (line 2): found character '\\t' that cannot start any token",)),
    Case("yaml-nested-too-deep", config_file("a: " + "[" * 5000), ("bad.yaml: nested too deeply to be a config file",)),
    Case("yaml-two-documents", config_file("train: {}\n---\ntrain: {}\n"),
         ("bad.yaml: not valid YAML (line 2): but found another document",)),
    Case("yaml-python-tag", config_file("train: !!python/object/apply:os.system ['echo hi']\n"),
         ("bad.yaml: not valid YAML (line 1): could not determine a constructor for the tag "
          "'tag:yaml.org,2002:python/object/apply:os.system'",)),
    Case("yaml-top-level-list", config_file("- 1\n"),
         ("bad.yaml: a config file must hold a mapping of sections, got list",)),
    Case("yaml-unknown-section", config_file("trian: {}\n"),
         ("bad.yaml: unknown section 'trian'. Valid sections: seed, space, strategy, task, train",)),
    Case("yaml-unknown-key", config_file("train:\n  epoch: 3\n"),
         ("bad.yaml: unknown key 'train.epoch'. Valid keys: ",)),
    Case("yaml-section-null", config_file("train:\n"), ("bad.yaml: 'train' must be a mapping of settings, got None",)),
    Case("yaml-wrong-type", config_file("train:\n  epochs: ten\n"),
         ("bad.yaml: train.epochs must be an integer, got 'ten'",)),
    Case("yaml-list-of-lists", config_file("train:\n  decay_epochs: [[1]]\n"),
         ("bad.yaml: train.decay_epochs must be an integer, got [1]",)),
    Case("override-not-key-value", config_file("{}", "train.epochs"),
         ("command line: override 'train.epochs' is not of the form section.key=value",)),
    Case("override-fraction-for-int", config_file("{}", "train.epochs=1.5"),
         ("command line: train.epochs must be an integer, got 1.5",)),
    Case("override-true-for-int", config_file("{}", "train.epochs=true"),
         ("command line: train.epochs must be an integer, got True",)),
    Case("override-5000-digits", config_file("{}", "train.epochs=" + "9" * 5000),
         ("command line: train.epochs must be an integer, got '9999", "...")),
    Case("override-nested-too-deep", config_file("{}", "train.lr=" + "[" * 3000),
         ("command line: train.lr must be a number, got '[[[[",)),
    Case("override-name-not-string", config_file("{}", "task.name=3"),
         ("command line: task.name must be a string, got 3",)),
    Case("override-section-then-key", config_file("{}", "train=3", "train.epochs=2"),
         ("command line: override 'train.", "' conflicts with an earlier override of 'train'")),
    Case("override-depth-absurd", config_file("{}", "space.enc_blocks=10000000000"),
         ("space.enc_blocks=10000000000: must be between 1 and 1024 (a genotype sets it from its highest enc/ label)",)),
    Case("override-depth-zero", config_file("{}", "space.dec_blocks=0"),
         ("space.dec_blocks=0: must be between 1 and 1024",)),
    Case("genotype-encoder-only", genotype_command("retrain", content=genotype_with(
        choices={k: v for k, v in GENOTYPE["choices"].items() if k.startswith("enc/")})),
         ("space.dec_blocks=0: must be between 1 and 1024 (a genotype sets it from its highest dec/ label)",)),
    Case("saved-config-yaml-broken", resume_with_saved_config("train: [unclosed\n"),
         ("run/config.yaml: not valid YAML (line 2)",)),

    # --- VQA questions and annotations (tasks/vqa) ---
    Case("vqa-questions-truncated", search_on("vqa", bytes_edit(Q_TRAIN, lambda b: b[:500])),
         ("v2_OpenEnded_mscoco_train2014_questions.json: not valid JSON (line 1, column 501",)),
    Case("vqa-questions-not-utf8", search_on("vqa", bytes_edit(Q_TRAIN, lambda b: b"\xff" + b)),
         ("v2_OpenEnded_mscoco_train2014_questions.json: not a UTF-8 text file",)),
    Case("vqa-questions-top-level-list", search_on("vqa", json_edit(Q_TRAIN, lambda d: [])),
         ("train2014_questions.json: expected a JSON object with a 'questions' list (the VQA v2 format), "
          "got a JSON list",)),
    Case("vqa-questions-key-missing", search_on("vqa", json_edit(Q_TRAIN, drop("questions"))),
         ("train2014_questions.json: expected a JSON object with a 'questions' list", "got 'questions' missing")),
    Case("vqa-questions-empty", search_on("vqa", json_edit(Q_TRAIN, lambda d: d.update(questions=[]))),
         ("train2014_questions.json: 'questions' is empty",)),
    Case("vqa-question-not-object", search_on("vqa", json_edit(Q_TRAIN, lambda d: d["questions"].__setitem__(2, [1]))),
         ("train2014_questions.json: questions[2] must be an object, got list [1]",)),
    Case("vqa-question-key-missing", search_on("vqa", json_edit(Q_TRAIN, lambda d: d["questions"][3].pop("image_id")
                                                                and None)),
         ("train2014_questions.json: questions[3] has no key 'image_id'",)),
    Case("vqa-question-text-int", search_on("vqa", json_edit(Q_TRAIN, set_field("questions", 3, "question", 5))),
         ("train2014_questions.json: questions[3]: 'question' must be a string, got integer 5",)),
    Case("vqa-question-id-list", search_on("vqa", json_edit(Q_TRAIN, set_field("questions", 3, "question_id", [1]))),
         ("train2014_questions.json: questions[3]: 'question_id' must be an integer, got list [1]",)),
    Case("vqa-question-id-bool", search_on("vqa", json_edit(Q_TRAIN, set_field("questions", 3, "question_id", True))),
         ("train2014_questions.json: questions[3]: 'question_id' must be an integer, got boolean true",)),
    Case("vqa-image-id-null", search_on("vqa", json_edit(Q_TRAIN, set_field("questions", 3, "image_id", None))),
         ("train2014_questions.json: questions[3]: 'image_id' must be an integer, got null",)),
    Case("vqa-question-id-duplicated", search_on("vqa", json_edit(Q_TRAIN, lambda d: d["questions"][3].update(
        question_id=d["questions"][2]["question_id"]))),
         ("train2014_questions.json: question_id 180002 appears twice (questions[2] and questions[3])",)),
    Case("vqa-annotations-empty", search_on("vqa", json_edit(A_TRAIN, lambda d: d.update(annotations=[]))),
         ("v2_mscoco_train2014_annotations.json: 'annotations' is empty",)),
    Case("vqa-annotation-id-duplicated", search_on("vqa", json_edit(A_TRAIN, lambda d: d["annotations"].append(
        dict(d["annotations"][0])))),
         ("train2014_annotations.json: question_id 180000 appears twice (annotations[0] and annotations[240])",)),
    Case("vqa-answers-string", search_on("vqa", json_edit(A_TRAIN, set_field("annotations", 1, "answers", "yes"))),
         ("train2014_annotations.json: annotations[1]: 'answers' must be a list, got string 'yes'",)),
    Case("vqa-answer-not-string", search_on("vqa", json_edit(A_TRAIN, set_field("annotations", 1, "answers",
                                                                                [{"answer": 3}]))),
         ("train2014_annotations.json: annotations[1]: answers[0] must be an object with a string 'answer', "
          "got {'answer': 3}",)),
    Case("vqa-multiple-choice-int", search_on("vqa", json_edit(A_TRAIN, set_field("annotations", 1,
                                                                                  "multiple_choice_answer", 3))),
         ("train2014_annotations.json: annotations[1]: 'multiple_choice_answer' must be a string, got integer 3",)),
    Case("vqa-annotation-missing-for-question", search_on("vqa", json_edit(A_TRAIN, lambda d: d["annotations"].pop(5)
                                                                           and None)),
         ("train2014_annotations.json: no annotation for 1 question(s) of v2_OpenEnded_mscoco_train2014_questions"
          ".json, e.g. question_id",)),
    Case("vqa-annotation-other-image", search_on("vqa", json_edit(A_TRAIN, set_field("annotations", 1, "image_id",
                                                                                     999_999))),
         ("train2014_annotations.json: question_id 180001 is about image_id 999999 here but image_id 180 in "
          "v2_OpenEnded_mscoco_train2014_questions.json",)),
    Case("vqa-unknown-split", search_on("vqa", lambda data, names: None, "task.train_split=dev"),
         ("unknown VQA split 'dev'. Valid splits: train, val, test, test-dev, vg",)),
    Case("vqa-eval-results-duplicated", evaluate_vqa(VQA_Q, VQA_A, [{"question_id": 1, "answer": "yes"}] * 2),
         ("r.json: question id 1 has more than one result",)),
    Case("vqa-eval-annotations-truncated", evaluate_vqa(VQA_Q, json.dumps(VQA_A).encode()[:40], []),
         ("a.json: annotations file is not valid JSON",)),

    # --- RefCOCO refs pickle + instances.json, SimREC anns (tasks/vgd, nas/safe_pickle.py) ---
    Case("refs-truncated", search_on("vgd", bytes_edit(REFS, lambda b: b[:300])),
         ("refs(unc).p: a refs file is truncated or corrupt, not a complete pickle",)),
    Case("refs-runs-code", search_on("vgd", bytes_edit(REFS, lambda b: b"cos\nsystem\n(S'echo hi'\ntR.")),
         ("refs(unc).p: refused to unpickle os.system: only plain lists, dicts, strings and numbers",)),
    Case("refs-not-list", search_on("vgd", refs_edit(lambda refs: {"a": 1})),
         ("refs(unc).p: expected a list of refs, got dict",)),
    Case("ref-not-dict", search_on("vgd", refs_edit(lambda refs: refs.__setitem__(0, [1]))),
         ("refs(unc).p: ref 0 must be a dict, got list [1]",)),
    Case("ref-key-missing", search_on("vgd", refs_edit(lambda refs: refs[0].pop("ann_id") and None)),
         ("refs(unc).p: ref 0 has no key 'ann_id'",)),
    Case("ref-ann-id-list", search_on("vgd", refs_edit(lambda refs: refs[0].__setitem__("ann_id", [1]))),
         ("refs(unc).p: ref 0: 'ann_id' must be an integer, got list [1]",)),
    Case("ref-sentences-string", search_on("vgd", refs_edit(lambda refs: refs[0].__setitem__("sentences", "abc"))),
         ("refs(unc).p: ref 0: 'sentences' must be a list, got string 'abc'",)),
    Case("ref-sentence-text-int", search_on("vgd", refs_edit(lambda refs: refs[0]["sentences"][0].__setitem__(
        "sent", 5))),
         ("refs(unc).p: ref 0: sentences[0]['sent'] must be a string, got integer 5",)),
    Case("ref-sent-id-duplicated", search_on("vgd", refs_edit(lambda refs: refs[1]["sentences"][0].__setitem__(
        "sent_id", refs[0]["sentences"][0]["sent_id"]))),
         ("refs(unc).p: sent_id 0 appears more than once (split 'train', again in 'train')",)),
    Case("ref-ann-id-not-in-instances", search_on("vgd", refs_edit(lambda refs: refs[0].__setitem__("ann_id", 10**9))),
         ("refs(unc).p: ref 0 has ann_id 1000000000, which instances.json does not have",)),
    Case("refs-split-empty", search_on("vgd", refs_edit(lambda refs: [r for r in refs if r["split"] != "train"])),
         ("unknown refcoco split 'train'. Splits in the annotations: val, testA, testB",)),
    Case("instances-no-annotations", search_on("vgd", json_edit(INSTANCES, drop("annotations"))),
         ("instances.json: expected a COCO instances object with an 'annotations' list",)),
    Case("instances-bbox-three-values", search_on("vgd", json_edit(INSTANCES, lambda d: d["annotations"][0].__setitem__(
        "bbox", [1, 2, 3]))),
         ("instances.json: annotation id 2457401: 'bbox' must be a list of 4 numbers [x, y, w, h], got [1, 2, 3]",)),
    Case("instances-bbox-negative-width", search_on("vgd", json_edit(INSTANCES, lambda d: d["annotations"][0]
                                                                     .__setitem__("bbox", [1, 2, -3, 4]))),
         ("instances.json: annotation id 2457401: 'bbox' is [x, y, w, h] and needs w >= 0 and h >= 0",)),
    Case("instances-id-duplicated", search_on("vgd", json_edit(INSTANCES, lambda d: d["annotations"].append(
        dict(d["annotations"][0], bbox=[0, 0, 1, 1])))),
         ("instances.json: annotation id 2457401 appears more than once",)),
    Case("simrec-not-object", search_on("vgd", json_edit(SIMREC, lambda d: []), "task.annotations=simrec"),
         ("refcoco.json: expected an object keyed by split, got list",)),
    Case("simrec-split-not-list", search_on("vgd", json_edit(SIMREC, lambda d: d.__setitem__("train", 5)),
                                            "task.annotations=simrec"),
         ("refcoco.json: split 'train' must be a list of entries, got integer 5",)),
    Case("simrec-refs-string", search_on("vgd", json_edit(SIMREC, lambda d: d["train"][0].__setitem__("refs", "abc")),
                                         "task.annotations=simrec"),
         ("refcoco.json: train[0]: 'refs' must be a list of strings, got string 'abc'",)),
    Case("simrec-bbox-three-values", search_on("vgd", json_edit(SIMREC, lambda d: d["train"][0].__setitem__(
        "bbox", [1, 2, 3])), "task.annotations=simrec"),
         ("refcoco.json: train[0]: 'bbox' must be a list of 4 numbers [x, y, w, h], got [1, 2, 3]",)),
    Case("simrec-iid-string", search_on("vgd", json_edit(SIMREC, lambda d: d["train"][0].__setitem__("iid", "x")),
                                        "task.annotations=simrec"),
         ("refcoco.json: train[0]: 'iid' must be an integer, got string 'x'",)),
    Case("simrec-split-empty", search_on("vgd", json_edit(SIMREC, lambda d: d.__setitem__("train", [])),
                                         "task.annotations=simrec"),
         ("refcoco split 'train' has no expressions in the simrec annotations",)),
    Case("vgd-eval-refs-wrong-split", evaluate_vgd(lambda data, names: None),
         ("predictions.json: ", "sent_ids of split 'val' in", "missing from the predictions")),

    # --- npz region features (nas/features.py) ---
    Case("npz-truncated", search_on("vqa", npz_bytes_edit(lambda b: b[: len(b) // 2])),
         ("{npz}: unreadable feature file (File is not a zip file)",)),
    Case("npz-empty-file", search_on("vqa", npz_bytes_edit(lambda b: b"")),
         ("{npz}: unreadable feature file (No data left in file)",)),
    Case("npz-member-corrupt", search_on("vqa", npz_bytes_edit(corrupt_deflate)),
         ("{npz}: unreadable feature file (Error -3 while decompressing data",)),  # a zlib.error: it used to crash
    Case("npz-is-npy", search_on("vqa", npz_bytes_edit(lambda b: npy_bytes(np.zeros(3)))),
         ("{npz}: is a single .npy array, expected an .npz archive of x, bbox, image_h, image_w",)),
    Case("npz-key-missing", search_on("vqa", npz_edit(lambda a: a.pop("bbox") is None)),
         ("{npz}: missing key(s) bbox (found x, num_bbox, image_h, image_w)",)),
    Case("npz-object-array", search_on("vqa", npz_edit(lambda a: npz_of(x=np.array([None], dtype=object),
                                                                      bbox=a["bbox"], image_h=a["image_h"],
                                                                      image_w=a["image_w"]))),
         ("{npz}: unreadable feature file (Object arrays cannot be loaded when allow_pickle=False)",)),
    Case("npz-x-strings", search_on("vqa", npz_edit(lambda a: a.__setitem__("x", a["x"].astype(str)))),
         ("{npz}: x has dtype <U32, expected numbers (float32)",)),
    Case("npz-x-complex", search_on("vqa", npz_edit(lambda a: a.__setitem__("x", a["x"].astype(np.complex64)))),
         ("{npz}: x has dtype complex64, expected numbers (float32)",)),
    Case("npz-x-nan", search_on("vqa", npz_edit(lambda a: a["x"].__setitem__((0, 0), np.nan))),
         ("{npz}: x holds NaN or infinite values",)),
    Case("npz-x-three-dims", search_on("vqa", npz_edit(lambda a: a.__setitem__("x", a["x"][None]))),
         ("{npz}: expected x of 2 dims and bbox (N, 4), got x (1, 32, 9) and bbox (9, 4)",)),
    Case("npz-bbox-count-mismatch", search_on("vqa", npz_edit(lambda a: a.__setitem__("bbox", a["bbox"][:2]))),
         ("{npz}: x has shape (32, 9) but bbox lists 2 regions",)),
    Case("npz-feature-size-mismatch", search_on("vqa", npz_edit(lambda a: a.__setitem__("x", a["x"][:5]))),
         ("feature size", "differs from the other files")),
    Case("npz-image-h-vector", search_on("vqa", npz_edit(lambda a: a.__setitem__("image_h", np.array([1, 2])))),
         ("{npz}: image_h must be one positive whole number of pixels, got [1, 2] (dtype int64, shape (2,))",)),
    Case("npz-image-w-fraction", search_on("vqa", npz_edit(lambda a: a.__setitem__("image_w", np.array(3.5)))),
         ("{npz}: image_w must be one positive whole number of pixels, got [3.5]",)),
    Case("npz-image-missing", search_on("vqa", lambda data, names: sorted(
        (data / "coco_extract" / "train2014").glob("*.npz"))[0].unlink()),
         ("train2014: no feature file for 1 image(s), e.g. image_id 180",)),

    # --- SCAN precomp arrays (tasks/itm) ---
    Case("precomp-ims-truncated", search_on("itm", bytes_edit(f"{PRECOMP}/train_ims.npy", lambda b: b[: len(b) // 2])),
         ("train_ims.npy: unreadable .npy (mmap length is greater than file size)",)),
    Case("precomp-ims-empty-file", search_on("itm", bytes_edit(f"{PRECOMP}/train_ims.npy", lambda b: b"")),
         ("train_ims.npy: is empty, expected a .npy array",)),
    Case("precomp-ims-not-npy", search_on("itm", bytes_edit(f"{PRECOMP}/train_ims.npy", lambda b: b"garbage" + b)),
         ("train_ims.npy: not a .npy file (it does not start with numpy's magic bytes)",)),
    Case("precomp-ims-npz", search_on("itm", npy_edit("train_ims.npy", lambda a: npz_of(a=a))),
         ("train_ims.npy: is an .npz archive, expected one array saved with numpy.save (.npy)",)),
    Case("precomp-ims-two-dims", search_on("itm", npy_edit("train_ims.npy", lambda a: a[:, 0])),
         ("train_ims.npy: expected (images, regions, features), got shape (40, 32)",)),
    Case("precomp-ims-strings", search_on("itm", npy_edit("train_ims.npy", lambda a: a.astype(str))),
         ("train_ims.npy: has dtype <U32, expected numbers",)),
    Case("precomp-ims-no-images", search_on("itm", npy_edit("train_ims.npy", lambda a: a[:0])),
         ("train_ims.npy: holds no images (shape (0, 16, 32))",)),
    Case("precomp-captions-mismatch", search_on("itm", npy_edit("train_ims.npy", lambda a: a[:-1])),
         ("train_caps.txt: 200 captions for 39 images (expected 5 per image)",)),
    Case("precomp-captions-not-utf8", search_on("itm", bytes_edit(f"{PRECOMP}/train_caps.txt", lambda b: b"\xff" + b)),
         ("train_caps.txt: not UTF-8 text (bad byte at offset 0)",)),
    Case("precomp-ids-not-numbers", search_on("itm", bytes_edit(f"{PRECOMP}/train_ids.txt", lambda b: b"abc\n" + b)),
         ("train_ids.txt: line 1 is not an image id (a whole number): 'abc'",)),
    Case("precomp-ids-count", search_on("itm", bytes_edit(f"{PRECOMP}/train_ids.txt",
                                                          lambda b: b"\n".join(b.split(b"\n")[3:]))),
         ("train_ids.txt: 37 ids for 40 images",)),
    Case("precomp-boxes-truncated", search_on("itm", bytes_edit(f"{PRECOMP}/train_boxes.npy",
                                                                lambda b: b[: len(b) // 2])),
         ("train_boxes.npy: unreadable .npy (Failed to read all data for array",)),
    Case("precomp-boxes-shape", search_on("itm", npy_edit("train_boxes.npy", lambda a: a[:, :, :3])),
         ("train_boxes.npy: expected shape (40, 16, 4), got (40, 16, 3)",)),
    Case("itm-eval-sims-npz", evaluate_itm(npz_of(a=np.zeros((2, 10)))),
         ("sims.npy: is an .npz archive; save the similarity matrix with numpy.save as one .npy array",)),

    # --- vocabularies (nas/text.py, tasks/vqa/answers.py) and word vectors ---
    Case("vocab-truncated", run_dir_file("vocab.json", b'{"PAD": 0, "UN'),
         ("run/vocab.json: not valid JSON (line 1, column 12",)),
    Case("vocab-list", run_dir_file("vocab.json", [1, 2]),
         ("run/vocab.json: a token vocabulary must be a JSON object of token -> id, got list",)),
    Case("vocab-no-unk", run_dir_file("vocab.json", {"PAD": 0, "CLS": 2, "what": 3}),
         ("run/vocab.json: token UNK must have id 1, got None",)),
    Case("vocab-id-string", run_dir_file("vocab.json", {**VOCAB, "x": "4"}),
         ("run/vocab.json: token 'x' has id '4'; ids must be integers 0..4",)),
    Case("vocab-id-out-of-range", run_dir_file("vocab.json", {**VOCAB, "x": 10**6}),
         ("run/vocab.json: token 'x' has id 1000000; ids must be integers 0..4",)),
    Case("vocab-id-shared", run_dir_file("vocab.json", {**VOCAB, "x": 3}),
         ("run/vocab.json: tokens 'what' and 'x' share id 3",)),
    Case("answers-not-mcan-format", run_dir_file("answer_dict.json", {"a": 0}),
         ("run/answer_dict.json: expected MCAN's [ans_to_ix, ix_to_ans] answer dictionary",)),
    Case("answers-gap", run_dir_file("answer_dict.json", [{"a": 0}, {"0": "a", "2": "b"}]),
         ("run/answer_dict.json: expected MCAN's [ans_to_ix, ix_to_ans] answer dictionary, with ix_to_ans keyed",)),
    Case("answers-empty", run_dir_file("answer_dict.json", [{}, {}]),
         ("run/answer_dict.json: the answer dictionary is empty",)),
    Case("answers-not-strings", run_dir_file("answer_dict.json", [{"a": 0}, {"0": 5}]),
         ("run/answer_dict.json: answers must be strings, got integer 5",)),
    Case("answers-repeated", run_dir_file("answer_dict.json", [{"a": 0}, {"0": "a", "1": "a"}]),
         ("run/answer_dict.json: answer 'a' has more than one index",)),
    Case("glove-not-utf8", word_vectors(b"what \xff 1.0\n"),
         ("glove.txt: word-vector file is not UTF-8 text (bad byte at offset 5)",)),
    Case("glove-no-vector", word_vectors(b"what\nis\n"),
         ("glove.txt: line 1 has a word and no vector; expected GloVe's 'word v1 v2 ...' lines",)),
    Case("glove-ragged", word_vectors(b"what 1 2\nis 1\n"), ("glove.txt: line 2 has 1 values, expected 2",)),
    Case("glove-not-number", word_vectors(b"what 1 x\n"), ("glove.txt: line 1 has a value that is not a number",)),

    # --- run folders read by nas board (nas/board/collect.py) ---
    Case("board-summary-truncated", board_run({"summary.json": '{"genotype": {'}),
         ("run/summary.json: not valid JSON (line 1, column 15",)),
    Case("board-summary-foreign", board_run({"summary.json": "[1]"}),
         ("run/summary.json: expected the JSON object 'nas retrain' writes, with a 'genotype' key",)),
    Case("board-log-line-not-object", board_run({"genotype.json": json.dumps(GENOTYPE),
                                                 "search_log.jsonl": '{"epoch": 0}\n[1]\n'}),
         ("run/search_log.jsonl: line 2 must be a JSON object, got list",)),

    # --- checkpoints (nas/checkpoint.py, nas/submit.py) ---
    Case("checkpoint-empty", checkpoint(raw=b""),
         ("best.pt: not a readable checkpoint (EOFError: the file ends early)",)),
    Case("checkpoint-garbage", checkpoint(raw=b"hello world" * 10), ("best.pt: not a readable checkpoint (",)),
    Case("checkpoint-truncated", checkpoint({"model": {"w": torch.zeros(1000)}}, cut=True),
         ("best.pt: not a readable checkpoint (RuntimeError: PytorchStreamReader failed",)),
    Case("checkpoint-runs-code", checkpoint({"config": os.system}),
         ("best.pt: refused to load checkpoint: it would run or build 'posix.system', and vlnas loads only tensors",)),
    Case("checkpoint-top-level-list", checkpoint([1, 2]), ("best.pt: not a vlnas checkpoint (top level is list)",)),
    Case("checkpoint-key-missing", checkpoint({"genotype": GENOTYPE, "model": {}}),
         ("best.pt: not a 'nas retrain' checkpoint (no 'config')",)),
    Case("checkpoint-config-not-mapping", checkpoint({"config": {"task": "vqa"}, "genotype": GENOTYPE, "model": {}}),
         ("best.pt: its 'config' must be a mapping of sections, got {'task': 'vqa'}",)),
    Case("checkpoint-genotype-broken", checkpoint({"config": SMOKE_CONFIG, "genotype": [1], "model": {}}),
         ("best.pt (genotype): a genotype must be a JSON object, got list",)),
    Case("checkpoint-weights-do-not-fit", checkpoint({"config": SMOKE_CONFIG, "genotype": GENOTYPE,
                                                      "model": {"x": torch.zeros(2)}}),
         ("best.pt: its weights do not fit this model: parameter names ", " missing (e.g. embedding.",
          "; 1 unexpected (e.g. x)")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_line_naming_it(case: Case, sources: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    names: dict[str, str] = {}
    argv = case.setup(tmp_path, sources, names)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), err
    for expected in case.expected:
        for name, value in names.items():
            expected = expected.replace(f"{{{name}}}", value)
        assert expected in lines[0]


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


def test_debug_flag_shows_the_traceback_of_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.json"
    path.write_text("[]")
    assert main(["genotype", "validate", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "genotype", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in genotype_from_dict" in err and "nas.errors.UserError: " in err
    assert err.strip().splitlines()[-1] == f"nas: error: {path}: a genotype must be a JSON object, got list"


def test_a_line_break_inside_a_message_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({**GENOTYPE, "a\nb": 1}))
    assert main(["genotype", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key(s) a\\nb. Valid keys:" in err


@pytest.mark.parametrize("stream", [
    b"\x80\x02]r\x00\x00\x00\x04.",  # EMPTY_LIST, LONG_BINPUT 2**26, STOP: the C unpickler's memo took 1 GiB
    b"\x80\x05\x96" + (2**31).to_bytes(8, "little") + b"ab.",  # BYTEARRAY8 claiming 2 GB: zero-filled first
], ids=["memo-index-2**26", "bytearray8-2GB"])
def test_a_tiny_hostile_refs_pickle_costs_no_memory(stream: bytes, sources: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    import resource

    data = tmp_path / "data"
    shutil.copytree(sources["vgd"], data)
    (data / REFS).write_bytes(stream)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    code = main(["evaluate", "--task", "vgd", "--predictions", str(tmp_path / "p.json"), "--refs", str(data / REFS),
                 "--instances", str(data / INSTANCES), "--split", "val"])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 2 and grown_mib < 256
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error: ") and "refs(unc).p: " in err and "\n" not in err


@pytest.mark.parametrize("line, expected", [
    (b"COCO_val2014_00\xc2\xc20\t640\t480\t2\tAAAA\tAAAA\n", "feat.tsv: line 1 is not UTF-8 text (bad byte 0xc2)"),
    (b"C\t=\tAA\t-1\tgBIkeJh/szw=\tsJz/X\n", "feat.tsv: line 1, column num_boxes: expected a count, got -1"),
    (b"\t\t\t" + b"1" * 30 + b"\t\t\n",
     "feat.tsv: line 1, column boxes: 0 bytes do not hold 111111111111111111111111111111 row(s) of float32"),
], ids=["not-utf8", "negative-count", "huge-count-empty-column"])
def test_tsv_lines_the_fuzzer_found(tmp_path: Path, line: bytes, expected: str) -> None:
    """The obj36 TSV reader is not behind a command yet; these crashed it (ValueError, UnicodeDecodeError)."""
    from nas.errors import UserError
    from nas.features_tsv import read_obj_tsv

    path = tmp_path / "feat.tsv"
    path.write_bytes(line)
    with pytest.raises(UserError) as error:
        list(read_obj_tsv(path))
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("argv", [
    ["retrain", "--genotype", "genotypes/mcan.json", "--config", "smoke", "space.norm=mid"],
    ["retrain", "--genotype", "genotypes/lxr955.json", "--task", "vqa", "space.hidden=63"],
    ["search", "--config", "smoke", "space.norm=mid"],
    ["pretrain", "--genotype", "genotypes/mcan.json", "--config", "smoke", "task.qa_fusion=max"],
], ids=["retrain-space", "retrain-width", "search-space", "pretrain-task"])
def test_a_refused_run_leaves_no_run_folder(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(REPO / arg) if arg.startswith("genotypes/") else arg for arg in argv]
    new, empty = tmp_path / "new" / "run", tmp_path / "empty"
    empty.mkdir()
    for out in (new, empty):
        assert main([*argv, "--out", str(out)]) == 2
        assert capsys.readouterr().err.startswith("nas: error: ")
    assert not new.exists() and new.parent.is_dir()  # the run folder goes; the parent it made stays
    assert list(empty.iterdir()) == []  # a folder given empty is left empty
