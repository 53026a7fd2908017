"""The NLVR2 task: lil-lab's JSON-lines statements about image pairs and LXMERT's obj36 TSV features.

Data layout under ``task.data_dir`` (lil-lab's ``nlvr2/data`` next to LXMERT's ``data/nlvr2_imgfeat``)::

    data/{train,dev,test1}.json           JSON lines; labels the strings "True"/"False"
    nlvr2_imgfeat/train_obj36.tsv         rows "train-<set>-<pair>-img0" and "...-img1"
    nlvr2_imgfeat/valid_obj36.tsv         the dev images (LXMERT's name)
    nlvr2_imgfeat/test_obj36.tsv          the test1 images

An example is a sentence with two images. Each image is encoded with the sentence by the
searched backbone as an ordinary row (``tasks/nlvr2/dataset.py``) and ``PairHead`` joins the two
rows; the loss is BCE on the label, summed over examples. Accuracy and consistency are the
official ``metrics.py``'s; the test split's predictions are written as ``test_predict.csv``.
With no ``data_dir``, the built-in generated dataset (``nas data synth --task nlvr2``) is used.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from nas.errors import UserError
from nas.features_tsv import load_tsv_features
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.nlvr2.annotations import Nlvr2Example, parse_identifier, read_annotations
from tasks.nlvr2.dataset import Nlvr2Dataset
from tasks.nlvr2.head import PairHead
from tasks.nlvr2.metric import evaluate_nlvr2_files, nlvr2_scores
from tasks.nlvr2.predictions import SUBMISSION_NAME, write_predictions

__all__ = ["Nlvr2Task", "Nlvr2Config", "SPLITS", "SYNTH_SIZES"]

# The public splits; test2 is held out by lil-lab, and LXMERT ships no features for it.
SPLITS = ("train", "dev", "test1")
FEATURE_FOLDER = "nlvr2_imgfeat"
FEATURE_FILES = {"train": "train_obj36.tsv", "dev": "valid_obj36.tsv", "test1": "test_obj36.tsv"}  # LXMERT's names

# Built-in dataset sizes (SynthNlvr2Config fields); tests and smoke runs use "tiny".
SYNTH_SIZES = {
    "tiny": {"train_sets": 24, "dev_sets": 8, "test1_sets": 8, "feature_dim": 32},
    "small": {"train_sets": 600, "dev_sets": 150, "test1_sets": 150, "feature_dim": 128},
    "default": {},
}


@dataclass
class Nlvr2Config:
    name: str = "nlvr2"
    data_dir: str | None = None  # NLVR2 folder (layout above); None = the built-in generated dataset
    cache_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "dev"
    test_split: str = "test1"  # written as test_predict.csv
    max_tokens: int = 20  # LXMERT's NLVR2 maximum
    max_regions: int = 36  # obj36
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1
    fusion: str = "product"  # product: pooled text * pooled image is added to their sum (MmNas: sum)
    synth_size: str = "default"
    synth_seed: int = 0
    max_images: int | None = None  # keep only the examples of each split's first N/2 image pairs (sorted ids)


@TASKS.register("nlvr2")
class Nlvr2Task(Task):
    Config = Nlvr2Config
    name = "nlvr2"
    primary_metric = "accuracy"

    def __init__(self, config: Nlvr2Config, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        self.check_options({"fusion": ("sum", "product")})
        self.examples: dict[str, Nlvr2Example] = {}  # every loaded example, by identifier
        # Batches carry example numbers; NLVR2's identifiers are strings.
        self._numbers: dict[str, int] = {}
        self._names: list[str] = []

    def data_dir(self) -> tuple[Path, bool]:
        def make_config(**fields: Any) -> Any:  # the generator is imported only when it is needed
            from nas.synth import SynthNlvr2Config

            return SynthNlvr2Config(**fields)

        def generate(path: Path, config: Any, progress: bool) -> Any:
            from nas.synth import generate_nlvr2

            return generate_nlvr2(path, config, progress)

        return self.resolve_data_dir("data", SYNTH_SIZES, make_config, generate)

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        if any("+" in split for split in splits):
            raise UserError("task.*_split: the nlvr2 task does not join splits with '+'")
        for split in splits:
            if split not in SPLITS:
                raise UserError(f"unknown NLVR2 split '{split}'. Valid splits: {', '.join(SPLITS)}")
        loaded = {name: read_annotations(_annotations_path(root, name)) for name in dict.fromkeys(["train", *splits])}
        tokenizer = Tokenizer()
        tokens = {name: tokenizer(e.sentence for e in examples) for name, examples in loaded.items()}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for ts in tokens.values() for t in ts))
        datasets: dict[str, Dataset] = {}
        dims = set()
        for name in dict.fromkeys(splits):
            examples = loaded[name]
            keep = _first_pairs(examples, self.config.max_images)
            if len(keep) < len(examples):
                self.truncated.add(name)
            file = root / FEATURE_FOLDER / FEATURE_FILES[name]
            features = load_tsv_features(file, self.config.max_regions, self.cache_dir(), self.progress)
            dims.add(features.feature_dim)
            for i in keep:
                for image in (examples[i].left_image, examples[i].right_image):
                    if image not in features.row_of:
                        raise UserError(f"{file}: no features for image {image!r} (example "
                                        f"{examples[i].identifier!r} of {_annotations_path(root, name)})")
            labelled = all(examples[i].label is not None for i in keep)
            numbers = np.asarray([self._number(examples[i]) for i in keep], np.int64)
            datasets[name] = Nlvr2Dataset(
                name, numbers, encode([tokens[name][i] for i in keep], vocab, self.config.max_tokens), features,
                np.asarray([features.row_of[examples[i].left_image] for i in keep], np.int64),
                np.asarray([features.row_of[examples[i].right_image] for i in keep], np.int64),
                np.asarray([examples[i].label for i in keep], bool) if labelled else None)
        if len(dims) > 1:
            raise UserError(f"{root / FEATURE_FOLDER}: the splits' region features differ in size ({sorted(dims)})")
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=dims.pop(), num_outputs=1,
                        word_vectors=word_vector_tensor(self.config.word_vectors, vocab))
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    def _number(self, example: Nlvr2Example) -> int:
        if example.identifier not in self._numbers:
            self._numbers[example.identifier] = len(self._names)
            self._names.append(example.identifier)
        self.examples[example.identifier] = example
        return self._numbers[example.identifier]

    def _identifiers(self, dataset: Dataset) -> list[str]:
        """NLVR2 identifiers of a split's examples (or of a Subset's), in order."""
        numbers = _base(dataset).numbers
        if isinstance(dataset, Subset):
            numbers = numbers[list(dataset.indices)]
        return [self._names[n] for n in numbers.tolist()]

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return PairHead(hidden, self.config.flat_mlp, dropout=self.config.dropout, fusion=self.config.fusion)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # outputs: (B,) logits, one per example (not per row); summed like the other tasks' BCE
        return F.binary_cross_entropy_with_logits(outputs, batch["label"], reduction="sum")

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"identifier": self._names[n], "label": bool(logit > 0)}
                for n, logit in zip(batch["example"].tolist(), outputs.tolist())]

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        examples = [self.examples[i] for i in self._identifiers(dataset)]
        return nlvr2_scores(examples, {p["identifier"]: p["label"] for p in predictions}).to_dict()

    def is_labelled(self, dataset: Dataset) -> bool:
        return _base(dataset).labels is not None

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """Always answer the more frequent training label."""
        labels = [self.examples[i].label for i in self._identifiers(train)]
        majority = sum(labels) * 2 >= len(labels)
        predictions = [{"identifier": i, "label": majority} for i in self._identifiers(dataset)]
        return {"answer": str(majority), **self.evaluate(split, dataset, predictions)}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return f"accuracy={metrics['accuracy']:.2f} consistency={metrics['consistency']:.2f}"

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """``test_predict.csv`` next to ``path``: one line per example of the split, or nothing."""
        self.warn_if_subset(path, [_base(dataset).name])
        examples = [self.examples[i] for i in self._identifiers(dataset)]
        return write_predictions(Path(path).parent / SUBMISSION_NAME, examples,
                                 {p["identifier"]: p["label"] for p in predictions})

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--nlvr2-json", help="NLVR2 JSON-lines file with labels (e.g. dev.json, test1.json)")
        parser.add_argument("--predict-csv", help="predictions: test_predict.csv lines 'identifier,True|False'")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k.replace('_', '-')}" for k in ("nlvr2_json", "predict_csv") if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task nlvr2 needs {', '.join(missing)}")
        return evaluate_nlvr2_files(args.predict_csv, args.nlvr2_json).to_dict()


def _annotations_path(root: Path, split: str) -> Path:
    return root / "data" / f"{split}.json"


def _first_pairs(examples: list[Nlvr2Example], max_images: int | None) -> list[int]:
    """Indices of the examples whose image pair is among the first ``max_images // 2`` pairs (sorted
    by set and pair number, so a set's pairs stay together); at least one pair."""
    if max_images is None:
        return list(range(len(examples)))

    def pair(example: Nlvr2Example) -> tuple[str, int, int]:
        split, set_id, pair_id, _ = parse_identifier(example.identifier)
        return split, int(set_id), int(pair_id)

    kept = set(sorted({pair(e) for e in examples})[:max(max_images // 2, 1)])
    return [i for i, e in enumerate(examples) if pair(e) in kept]


def _base(dataset: Dataset) -> Nlvr2Dataset:
    return dataset.dataset if isinstance(dataset, Subset) else dataset
