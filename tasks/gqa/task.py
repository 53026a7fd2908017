"""The GQA task: balanced question files and LXMERT's obj36 TSV features.

Data layout under ``task.data_dir``::

    questions/{train,val,testdev}_balanced_questions.json
    vg_gqa_imgfeat/vg_gqa_obj36.tsv           (train and val images, as LXMERT ships them)
    vg_gqa_imgfeat/gqa_testdev_obj36.tsv      (testdev images)

Questions are answered from a vocabulary of training answers (kept verbatim: the official
metric is an exact string match) and trained with MmNas's summed BCE; accuracy is GQA's,
over balanced questions, with open/binary and consistency. With no ``data_dir``, the
built-in generated dataset (``nas data synth --task gqa``) is created once and used.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from nas.errors import UserError
from nas.features_tsv import load_tsv_features
from nas.heads import FusionHead
from nas.io import read_json
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.gqa.answers import load_or_build_answers
from tasks.gqa.metric import gqa_scores
from tasks.gqa.questions import GqaQuestion, load_questions
from tasks.gqa.submission import read_predictions, write_submission
from tasks.vqa.dataset import VqaDataset, VqaSplit

__all__ = ["GqaTask", "GqaConfig", "SPLITS"]

SPLITS = ("train", "val", "testdev")
FEATURE_FILES = {"train": "vg_gqa_obj36.tsv", "val": "vg_gqa_obj36.tsv", "testdev": "gqa_testdev_obj36.tsv"}
FEATURE_FOLDER = "vg_gqa_imgfeat"

# Built-in dataset sizes (SynthGqaConfig fields); tests and smoke runs use "tiny".
SYNTH_SIZES = {
    "tiny": {"train_images": 60, "val_images": 20, "testdev_images": 20, "questions_per_image": 4,
             "feature_dim": 32},
    "small": {"train_images": 800, "val_images": 200, "testdev_images": 200, "feature_dim": 128},
    "default": {},
}


@dataclass
class GqaConfig:
    name: str = "gqa"
    data_dir: str | None = None  # GQA folder (layout above); None = the built-in generated dataset
    cache_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "testdev"  # written as GQA's submission file
    answer_min_count: int = 1
    max_tokens: int = 20  # LXMERT's GQA maximum
    max_regions: int = 100
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1
    synth_size: str = "default"
    synth_seed: int = 0
    max_images: int | None = None  # keep only the questions of each split's first N images (sorted ids)


@TASKS.register("gqa")
class GqaTask(Task):
    Config = GqaConfig
    name = "gqa"
    primary_metric = "accuracy"

    def __init__(self, config: GqaConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        self.questions: dict[str, GqaQuestion] = {}  # every loaded question, by GQA id
        self.families: dict[str, str] = {}
        self.answers: list[str] = []
        # Batches carry question numbers; GQA's ids are strings.
        self._numbers: dict[str, int] = {}
        self._names: list[str] = []

    def data_dir(self) -> tuple[Path, bool]:
        def make_config(**fields: Any) -> Any:  # the generator is imported only when it is needed
            from nas.synth import SynthGqaConfig

            return SynthGqaConfig(**fields)

        def generate(path: Path, config: Any, progress: bool) -> Any:
            from nas.synth import generate_gqa

            return generate_gqa(path, config, progress)

        return self.resolve_data_dir("questions", SYNTH_SIZES, make_config, generate)

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        if any("+" in split for split in splits):
            raise UserError("task.*_split: the gqa task does not join splits with '+'")
        for split in splits:
            if split not in SPLITS:
                raise UserError(f"unknown GQA split '{split}'. Valid splits: {', '.join(SPLITS)}")
        loaded = {name: load_questions(_questions_path(root, name)) for name in dict.fromkeys(["train", *splits])}
        for questions in loaded.values():
            self.questions.update(questions)
        meta_path = root / "synth_meta.json"
        self.families = read_json(meta_path).get("families", {}) if meta_path.is_file() else {}

        tokenizer = Tokenizer()
        tokens = {name: tokenizer(q.question for q in questions.values()) for name, questions in loaded.items()}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for ts in tokens.values() for t in ts))
        self.answers = load_or_build_answers(self.run_dir / "answer_dict.json",
                                             (q.answer for q in loaded["train"].values() if q.answer is not None),
                                             self.config.answer_min_count)
        answer_index = {a: i for i, a in enumerate(self.answers)}
        features = {}
        datasets: dict[str, Dataset] = {}
        for name in dict.fromkeys(splits):
            questions = list(loaded[name].values())
            keep = _first_images(questions, self.config.max_images)
            if len(keep) < len(questions):
                self.truncated.add(name)
            file = root / FEATURE_FOLDER / FEATURE_FILES[name]
            if file not in features:
                features[file] = load_tsv_features(file, self.config.max_regions, self.cache_dir(), self.progress)
            missing = next((questions[i] for i in keep if questions[i].image_id not in features[file].row_of), None)
            if missing is not None:
                raise UserError(f"{file}: no features for image {missing.image_id!r} (question "
                                f"{missing.question_id!r} of {_questions_path(root, name)})")
            labelled = all(questions[i].answer is not None for i in keep)
            records = [{"question_id": self._number(questions[i].question_id), "image_id": questions[i].image_id}
                       for i in keep]
            targets = [[(answer_index[questions[i].answer], 1.0)] if questions[i].answer in answer_index else []
                       for i in keep] if labelled else None
            encoded = encode([tokens[name][i] for i in keep], vocab, self.config.max_tokens)
            datasets[name] = VqaDataset(VqaSplit(name, records, records if labelled else None), encoded,
                                        features[file], targets, len(self.answers))
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=next(iter(features.values())).feature_dim,
                        num_outputs=len(self.answers),
                        word_vectors=word_vector_tensor(self.config.word_vectors, vocab))
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    def _number(self, question_id: str) -> int:
        if question_id not in self._numbers:
            self._numbers[question_id] = len(self._names)
            self._names.append(question_id)
        return self._numbers[question_id]

    def _question_id(self, number: int) -> str:
        return self._names[number]

    def _question_ids(self, dataset: Dataset) -> list[str]:
        """GQA ids of a split's questions (or of a Subset's), in order."""
        numbers = _base(dataset).question_ids
        if isinstance(dataset, Subset):
            numbers = numbers[list(dataset.indices)]
        return [self._names[n] for n in numbers.tolist()]

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return FusionHead(hidden, self.config.flat_mlp, meta.num_outputs, dropout=self.config.dropout)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, batch["target"], reduction="sum")

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        best = outputs.argmax(dim=1).tolist()
        return [{"question_id": self._question_id(n), "answer": self.answers[a]}
                for n, a in zip(batch["question_id"].tolist(), best)]

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        questions = {qid: self.questions[qid] for qid in self._question_ids(dataset)}
        answered = {p["question_id"]: p["answer"] for p in predictions}
        metrics: dict[str, Any] = gqa_scores(questions, answered, f"split '{split}'").to_dict()
        if self.families:
            per_family: dict[str, list[bool]] = {}
            for qid, question in questions.items():
                if question.balanced and qid in self.families:
                    per_family.setdefault(self.families[qid], []).append(answered[qid] == question.answer)
            metrics["per_family"] = {f: round(100 * sum(v) / len(v), 2) for f, v in sorted(per_family.items())}
        return metrics

    def is_labelled(self, dataset: Dataset) -> bool:
        return _base(dataset).targets is not None

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """Always answer the most frequent training answer."""
        counts = Counter(self.questions[q].answer for q in self._question_ids(train))
        majority = counts.most_common(1)[0][0]
        predictions = [{"question_id": q, "answer": majority} for q in self._question_ids(dataset)]
        return {"answer": majority, **self.evaluate(split, dataset, predictions)}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return f"accuracy={metrics['accuracy']:.2f} (open={metrics['open']:.2f} binary={metrics['binary']:.2f})"

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """GQA's submission file, one entry per question of the split, refused when any is missing."""
        self.warn_if_subset(path, [_base(dataset).split.name])
        return write_submission(path, {p["question_id"]: p["answer"] for p in predictions},
                                self._question_ids(dataset))

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--balanced-questions", help="GQA questions JSON ({split}_balanced_questions.json)")
        parser.add_argument("--submission", help="GQA predictions JSON: a list of {questionId, prediction}")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k.replace('_', '-')}" for k in ("balanced_questions", "submission")
                   if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task gqa needs {', '.join(missing)}")
        scores = gqa_scores(load_questions(args.balanced_questions), read_predictions(args.submission), args.submission)
        return scores.to_dict()


def _questions_path(root: Path, split: str) -> Path:
    return root / "questions" / f"{split}_balanced_questions.json"


def _first_images(questions: list[GqaQuestion], max_images: int | None) -> list[int]:
    """Indices of the questions whose image is among the first ``max_images`` image ids (sorted)."""
    if max_images is None:
        return list(range(len(questions)))
    kept = set(sorted({q.image_id for q in questions})[:max_images])
    return [i for i, q in enumerate(questions) if q.image_id in kept]


def _base(dataset: Dataset) -> VqaDataset:
    return dataset.dataset if isinstance(dataset, Subset) else dataset
