"""The VQA v2 task: real question/annotation JSON and bottom-up ``.npz`` features.

Data layout under ``task.data_dir`` (MCAN's ``datasets/`` folder)::

    vqa/v2_OpenEnded_mscoco_{train2014,val2014,test2015}_questions.json
    vqa/v2_mscoco_{train2014,val2014}_annotations.json
    vqa/VG_questions.json, vqa/VG_annotations.json        (optional: the "vg" split, MCAN's
                                                          Visual Genome augmentation)
    coco_extract/{train2014,val2014,test2015}/COCO_<split>_%012d.jpg.npz

The vg questions are about COCO images; as in MmNas, an image's features are looked up
by id in all three feature folders. With no ``data_dir``, the built-in generated dataset
(``nas data synth``) is created once in the cache and used.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from nas.data import BatchConcat
from nas.errors import UserError, described, json_type, shown
from nas.features import index_feature_files, load_region_features
from nas.heads import FusionHead
from nas.io import atomic_write_json, read_json
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta, check_complete, first_images
from tasks.vqa.answer_norm import prep_answer
from tasks.vqa.answers import load_or_build_answer_vocab, soft_scores
from tasks.vqa.dataset import VqaDataset, VqaSplit
from tasks.vqa.evaluation import evaluate_vqa, evaluate_vqa_files
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor

__all__ = ["VqaTask", "VqaConfig", "SPLIT_SUBTYPES", "SPLITS", "VG_FILES", "read_split", "split_files"]

# Built-in dataset sizes; tests and smoke runs use "tiny". Finer control: nas data synth + --data.
SYNTH_SIZES = {
    "tiny": {"train_images": 60, "val_images": 20, "test_images": 20, "questions_per_image": 4, "feature_dim": 32},
    "small": {"train_images": 800, "val_images": 200, "test_images": 200, "feature_dim": 128},
    "default": {},
}

# Split name -> (file subtype, feature folder).
SPLIT_SUBTYPES = {"train": ("train2014", "train2014"), "val": ("val2014", "val2014"),
                  "test": ("test2015", "test2015"), "test-dev": ("test-dev2015", "test2015")}
# MCAN's and MmNas's Visual Genome augmentation (questions, annotations), beside the VQA v2 files.
VG_FILES = ("VG_questions.json", "VG_annotations.json")
SPLITS = (*SPLIT_SUBTYPES, "vg")
# MmNas indexes every .npz of these folders by image id, so a vg question finds its image in
# whichever holds it (MCAN's VG questions are about train2014 and val2014 images).
FEATURE_FOLDERS = ("train2014", "val2014", "test2015")


@dataclass
class VqaConfig:
    name: str = "vqa"
    data_dir: str | None = None  # MCAN-style datasets/ folder; None = the built-in generated dataset
    cache_dir: str | None = None  # feature caches and generated data; None = $VLNAS_CACHE or ~/.cache/vlnas
    train_split: str = "train"  # "train", or joined with '+': "train+val", "train+val+vg" (MCAN's default)
    eval_split: str = "val"
    test_split: str = "test"  # the split whose results file is written for the evaluation server
    answer_min_count: int = 9  # MCAN: answers seen at least 9 times
    answer_splits: list[str] = field(default_factory=lambda: ["train"])
    max_tokens: int = 14
    max_regions: int = 100
    word_vectors: str | None = None  # GloVe text file or an installed spaCy package with vectors
    flat_mlp: int = 512
    dropout: float = 0.1  # in the head's AttFlat MLPs (MmNas 0.1); space.dropout covers the blocks
    # The built-in dataset (used when data_dir is None): a size preset from SYNTH_SIZES.
    synth_size: str = "default"
    synth_seed: int = 0
    # Keep only the questions of each split's first N images, by ascending image id (the JSON
    # order is not per image); only their features are read. The vocabularies still count the
    # whole files, so the model has the shape of a full run. --tiny: 512, --fast: 4096 (LXMERT's).
    max_images: int | None = None


@TASKS.register("vqa")
class VqaTask(Task):
    Config = VqaConfig
    name = "vqa"
    primary_metric = "accuracy"

    def __init__(self, config: VqaConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        self.annotations: dict[int, dict] = {}
        self.answers: list[str] = []

    # ----------------------------------------------------------------- data
    def data_dir(self) -> tuple[Path, bool]:
        """The dataset folder and whether it is the built-in one (generated on first use)."""
        from nas.synth import SynthVqaConfig, generate_vqa

        return self.resolve_data_dir("vqa", SYNTH_SIZES, SynthVqaConfig, generate_vqa)

    def _read_split(self, root: Path, name: str) -> VqaSplit:
        return read_split(root, name)

    def _check_vg_files(self, root: Path, names: list[str]) -> None:
        """A vg split needs both VG files; name the setting that asked for it and the missing file."""
        if "vg" not in names:
            return
        for path in split_files(root, "vg"):
            if not path.is_file():
                raise UserError(f"{self._asking_for('vg')}: {path} not found (the vg split is MCAN's Visual "
                                f"Genome augmentation, {' and '.join(VG_FILES)} beside the VQA v2 files)")

    def _asking_for(self, name: str) -> str:
        for key in ("train_split", "eval_split", "test_split"):
            value = getattr(self.config, key)
            if name in value.split("+"):
                return f"task.{key}={value}"
        if name in self.config.answer_splits:
            return f"task.answer_splits={','.join(self.config.answer_splits)}"
        return f"split '{name}'"

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        names = list(dict.fromkeys(part for split in splits for part in split.split("+")))
        for name in names:
            if name not in SPLITS:
                self._read_split(root, name)  # the unknown-split error
        self._check_vg_files(root, names + list(self.config.answer_splits))
        # The vocabulary covers every split present on disk, VG included (as MCAN and MmNas
        # do), so it does not depend on which splits this command happens to load.
        present = [n for n in ("train", "val", "test", "vg") if split_files(root, n)[0].is_file()]
        loaded = {name: self._read_split(root, name) for name in dict.fromkeys(names + present)}
        families = _families(root)
        for split in loaded.values():
            split.families = families
            for annotation in split.annotations or []:
                self.annotations[annotation["question_id"]] = annotation

        tokenizer = Tokenizer()
        tokens = {name: tokenizer(q["question"] for q in split.questions) for name, split in loaded.items()}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for n in present for t in tokens[n]))
        answer_annotations = [a for n in self.config.answer_splits for a in self._split_annotations(loaded, root, n)]
        self.answers = load_or_build_answer_vocab(self.run_dir / "answer_dict.json", answer_annotations,
                                                  self.config.answer_min_count)
        answer_index = {a: i for i, a in enumerate(self.answers)}

        # Each split keeps the questions of its first max_images images; then every feature
        # folder is read once, for the images all loaded splits need from it.
        kept = {name: _first_images_of(loaded[name], self.config.max_images) for name in names}
        self.truncated |= {name for name in names if len(kept[name]) < len(loaded[name].questions)}
        folders = {name: self._feature_folders(root, name, [loaded[name].questions[i] for i in kept[name]])
                   for name in names}
        wanted: dict[str, set[int]] = {}
        for name in names:
            for index, folder in zip(kept[name], folders[name]):
                wanted.setdefault(folder, set()).add(loaded[name].questions[index]["image_id"])
        features = {folder: load_region_features(root / "coco_extract" / folder, ids, self.config.max_regions,
                                                 self.cache_dir(), self.progress)
                    for folder, ids in sorted(wanted.items(), key=lambda item: FEATURE_FOLDERS.index(item[0]))}

        datasets: dict[str, Dataset] = {}
        for split in dict.fromkeys(splits):
            parts = split.split("+")
            questions = [loaded[p].questions[i] for p in parts for i in kept[p]]
            if not questions:
                raise UserError(f"split '{split}' has no questions (files in {root / 'vqa'})")
            labelled = all(loaded[p].annotations is not None for p in parts)
            annotations = [loaded[p].annotations[i] for p in parts for i in kept[p]] if labelled else None
            question_folders = [folder for p in parts for folder in folders[p]]
            sources = sorted(set(question_folders), key=FEATURE_FOLDERS.index)
            encoded = np.concatenate([encode([tokens[p][i] for i in kept[p]], vocab, self.config.max_tokens)
                                      for p in parts])
            targets = [soft_scores(a["answers"], answer_index) for a in annotations] if labelled else None
            datasets[split] = VqaDataset(VqaSplit(split, questions, annotations, families), encoded,
                                         [features[f] for f in sources], targets, len(self.answers),
                                         sources=[sources.index(f) for f in question_folders])
        vectors = word_vector_tensor(self.config.word_vectors, vocab)
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=_feature_dim(next(iter(datasets.values()))),
                        num_outputs=len(self.answers), word_vectors=vectors)
        return TaskData(splits={s: datasets[s] for s in splits}, meta=meta,
                        info={"data_dir": str(root), "builtin": builtin})

    def _feature_folders(self, root: Path, name: str, questions: list[dict]) -> list[str]:
        """The coco_extract folder holding each question's image."""
        if name != "vg":
            return [SPLIT_SUBTYPES[name][1]] * len(questions)
        indexed = [(folder, index_feature_files(root / "coco_extract" / folder)) for folder in FEATURE_FOLDERS]
        found = []
        for question in questions:
            folder = next((f for f, files in indexed if question["image_id"] in files), None)
            if folder is None:
                raise UserError(f"{root / 'coco_extract'}: no feature file for vg image_id {question['image_id']} "
                                f"(question_id {question['question_id']}) in {', '.join(FEATURE_FOLDERS)}")
            found.append(folder)
        return found

    def _split_annotations(self, loaded: dict[str, VqaSplit], root: Path, name: str) -> list[dict]:
        split = loaded.get(name) or self._read_split(root, name)
        if split.annotations is None:
            raise UserError(f"task.answer_splits: split '{name}' has no annotations file")
        return split.annotations

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return FusionHead(hidden, self.config.flat_mlp, meta.num_outputs, dropout=self.config.dropout)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # MmNas/MCAN: BCE on soft scores, summed over answers and the batch.
        return F.binary_cross_entropy_with_logits(outputs, batch["target"], reduction="sum")

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        best = outputs.argmax(dim=1).tolist()
        return [{"question_id": int(qid), "answer": self.answers[a]}
                for qid, a in zip(batch["question_id"].tolist(), best)]

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        annotations = []
        for prediction in predictions:
            annotation = self.annotations.get(prediction["question_id"])
            if annotation is None:
                raise UserError(f"split '{split}' has no annotations to evaluate against")
            annotations.append(annotation)
        scores = evaluate_vqa(annotations, predictions)
        metrics: dict[str, Any] = {"accuracy": scores.overall, "per_answer_type": scores.per_answer_type}
        families = _dataset_families(dataset)
        if families:
            per_family: dict[str, list[float]] = {}
            for qid, score in scores.per_question.items():
                per_family.setdefault(families[qid], []).append(score)
            metrics["per_family"] = {f: round(sum(v) / len(v), 2) for f, v in sorted(per_family.items())}
        return metrics

    def is_labelled(self, dataset: Dataset) -> bool:
        return all(part.targets is not None for part in _base(dataset))

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """The majority-answer baseline: always answer the most frequent training answer."""
        counts = Counter(prep_answer(self.annotations[int(q)]["multiple_choice_answer"])
                         for q in _question_ids(train))
        majority = counts.most_common(1)[0][0]
        predictions = [{"question_id": int(q), "answer": majority} for q in _question_ids(dataset)]
        return {"answer": majority, **self.evaluate(split, dataset, predictions)}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        types = " ".join(f"{k}={v:.2f}" for k, v in metrics.get("per_answer_type", {}).items())
        return f"accuracy={metrics['accuracy']:.2f} ({types})"

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """VQA's server format: a list of {question_id: int, answer: str}, one per question."""
        check_complete(path, [p["question_id"] for p in predictions], _question_ids(dataset), "question_id")
        bad = next((p for p in predictions if not isinstance(p["answer"], str)), None)
        if bad is not None:
            raise UserError(f"{path}: question {bad['question_id']} has a non-string answer {bad['answer']!r}")
        results = [{"question_id": int(p["question_id"]), "answer": p["answer"]} for p in predictions]
        self.warn_if_subset(path, (part for base in _base(dataset) for part in base.split.name.split("+")))
        return atomic_write_json(path, results, indent=None)

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--questions", help="questions JSON (v2_OpenEnded_mscoco_*_questions.json)")
        parser.add_argument("--annotations", help="annotations JSON (v2_mscoco_*_annotations.json)")
        parser.add_argument("--results", help="results JSON: a list of {question_id, answer}")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k}" for k in ("questions", "annotations", "results") if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task vqa needs {', '.join(missing)}")
        scores = evaluate_vqa_files(args.questions, args.annotations, args.results)
        return {"overall": scores.overall, "per_answer_type": scores.per_answer_type,
                "per_question_type": scores.per_question_type, "num_questions": scores.num_questions}


# The fields the loader reads, with the JSON type each must have (VQA v2's released files).
_FIELDS = {"questions": {"question_id": int, "image_id": int, "question": str},
           "annotations": {"question_id": int, "image_id": int, "multiple_choice_answer": str, "answers": list}}
_TYPE_WORDS = {int: "an integer", str: "a string", list: "a list"}


def _records(data: Any, key: str, path: Path) -> list[dict]:
    """The ``key`` list of a VQA questions or annotations file, every record checked field by field."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        found = f"a JSON {json_type(data)}" if not isinstance(data, dict) else \
            f"'{key}' {'missing' if key not in data else 'as ' + json_type(data[key])}"
        raise UserError(f"{path}: expected a JSON object with a '{key}' list (the VQA v2 format), got {found}")
    records = data[key]
    if not records:
        raise UserError(f"{path}: '{key}' is empty")
    seen: dict[int, int] = {}
    for number, record in enumerate(records):
        where = f"{path}: {key}[{number}]"
        if not isinstance(record, dict):
            raise UserError(f"{where} must be an object, got {described(record)}")
        for name, kind in _FIELDS[key].items():
            if name not in record:
                raise UserError(f"{where} has no key '{name}'")
            value = record[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise UserError(f"{where}: '{name}' must be {_TYPE_WORDS[kind]}, got {described(value)}")
        if key == "annotations":
            for k, answer in enumerate(record["answers"]):
                if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
                    raise UserError(f"{where}: answers[{k}] must be an object with a string 'answer', "
                                    f"got {shown(answer)}")
        qid = record["question_id"]
        if qid in seen:  # the official evaluator would silently keep one of them
            raise UserError(f"{path}: question_id {qid} appears twice ({key}[{seen[qid]}] and {key}[{number}])")
        seen[qid] = number
    return records


def read_split(root: Path, name: str) -> VqaSplit:
    """A VQA v2 split's questions and, when the file exists, their annotations in question order,
    every record checked (also read by the caption task for the questions about its images)."""
    if name not in SPLITS:
        raise UserError(f"unknown VQA split '{name}'. Valid splits: {', '.join(SPLITS)} "
                        "(join with '+', e.g. train+val+vg)")
    questions_path, annotations_path = split_files(root, name)
    questions = _records(read_json(questions_path, "questions file"), "questions", questions_path)
    annotations = None
    if annotations_path.is_file():
        annotations = _records(read_json(annotations_path, "annotations file"), "annotations",
                               annotations_path)
        by_id = {a["question_id"]: a for a in annotations}
        missing = [q["question_id"] for q in questions if q["question_id"] not in by_id]
        if missing:
            raise UserError(f"{annotations_path}: no annotation for {len(missing)} question(s) of "
                            f"{questions_path.name}, e.g. question_id {missing[0]}")
        annotations = [by_id[q["question_id"]] for q in questions]
        # Files of two releases can share question ids; their image ids tell them apart.
        for question, annotation in zip(questions, annotations):
            if question["image_id"] != annotation["image_id"]:
                raise UserError(f"{annotations_path}: question_id {question['question_id']} is about image_id "
                                f"{annotation['image_id']} here but image_id {question['image_id']} in "
                                f"{questions_path.name}")
    return VqaSplit(name, questions, annotations)


def split_files(root: Path, name: str) -> tuple[Path, Path]:
    """The split's questions file and annotations file (which test splits do not have)."""
    if name == "vg":
        return root / "vqa" / VG_FILES[0], root / "vqa" / VG_FILES[1]
    subtype = SPLIT_SUBTYPES[name][0]
    return (root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
            root / "vqa" / f"v2_mscoco_{subtype}_annotations.json")


def _first_images_of(split: VqaSplit, max_images: int | None) -> list[int]:
    """Indices, in file order, of the questions about the split's first ``max_images`` images."""
    keep = first_images((q["image_id"] for q in split.questions), max_images)
    return [i for i, q in enumerate(split.questions) if keep is None or q["image_id"] in keep]


def _families(root: Path) -> dict[int, str] | None:
    meta = root / "synth_meta.json"
    if not meta.is_file():
        return None
    data = read_json(meta, "built-in dataset description")
    families = data.get("families", {}) if isinstance(data, dict) else None
    if not isinstance(families, dict) or not all(isinstance(family, str) and qid.isascii() and qid.isdigit()
                                                 for qid, family in families.items()):
        raise UserError(f"{meta}: expected {{'families': {{question_id: family name}}}}, as 'nas data synth' writes")
    return {int(qid): family for qid, family in families.items()}


def _base(dataset: Dataset) -> list[VqaDataset]:
    if isinstance(dataset, VqaDataset):
        return [dataset]
    if isinstance(dataset, BatchConcat):
        return [d for part in dataset.parts for d in _base(part)]
    return _base(dataset.dataset)  # a Subset


def _question_ids(dataset: Dataset) -> list[int]:
    if hasattr(dataset, "indices") and not isinstance(dataset, VqaDataset):
        base = _question_ids(dataset.dataset)
        return [base[i] for i in dataset.indices]
    return [int(q) for d in _base(dataset) for q in d.question_ids]


def _dataset_families(dataset: Dataset) -> dict[int, str] | None:
    merged: dict[int, str] = {}
    for base in _base(dataset):
        if base.split.families is None:
            return None
        merged.update(base.split.families)
    return merged


def _feature_dim(dataset: Dataset) -> int:
    return _base(dataset)[0].feature_dim
