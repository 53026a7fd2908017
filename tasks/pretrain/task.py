"""The pre-training task (``nas pretrain``): LXMERT's objectives on a caption-and-question corpus.

Data layout under ``task.data_dir`` (LXMERT's ``data/`` folder)::

    lxmert/{mscoco_train,mscoco_nominival,mscoco_minival,vgnococo}.json   corpus files (corpus.py)
    mscoco_imgfeat/train2014_obj36.tsv    images of mscoco_train
    mscoco_imgfeat/val2014_obj36.tsv      images of mscoco_nominival and mscoco_minival
    vg_gqa_imgfeat/vg_gqa_obj36.tsv       images of vgnococo

Every sentence is a sample. Objectives, each weighted by ``task.<name>_weight``: masked words
(MLM), masked regions (their detector object class and attribute, confidence-weighted, and
their feature, smooth L1), image-text matching (half the sentences are swapped for another
image's) and, with ``task.qa``, the answers of questions. A run is an ordinary retrain of a
genotype; its embedding and backbone then start a fine-tuning run (``train.init``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from nas.errors import UserError
from nas.features_tsv import load_tsv_features
from nas.io import atomic_write_json
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta, check_complete
from nas.text import SPECIAL_TOKENS, Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.gqa.answers import load_or_build_answers
from tasks.pretrain.corpus import Sentence, read_corpus
from tasks.pretrain.dataset import IGNORE, Masking, PretrainDataset
from tasks.pretrain.head import PretrainHead
from tasks.pretrain.labels import load_region_labels

__all__ = ["PretrainTask", "PretrainConfig", "FEATURE_FILES", "MASK"]

# LXMERT's corpus splits and the feature file holding their images.
FEATURE_FILES = {"mscoco_train": "mscoco_imgfeat/train2014_obj36.tsv",
                 "mscoco_nominival": "mscoco_imgfeat/val2014_obj36.tsv",
                 "mscoco_minival": "mscoco_imgfeat/val2014_obj36.tsv",
                 "vgnococo": "vg_gqa_imgfeat/vg_gqa_obj36.tsv"}
MASK = "MASK"  # upper case: the tokenizer lower-cases, so no corpus word can collide with it
_EVAL_SALT = 0
_OBJECTIVES = ("mlm", "object", "attr", "feature", "match", "qa")

# Built-in corpus sizes (SynthPretrainConfig fields); feature_dim matches the gqa task's preset of
# the same name, so a pre-trained embedding reads the built-in GQA features.
SYNTH_SIZES = {
    "tiny": {"train_images": 40, "val_images": 10, "captions_per_image": 3, "questions_per_image": 3,
             "feature_dim": 32},
    "small": {"train_images": 2000, "val_images": 200, "feature_dim": 128},
    "default": {},
}


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    data_dir: str | None = None  # LXMERT's data folder (layout above); None = the built-in corpus
    cache_dir: str | None = None
    train_split: str = "mscoco_train"  # corpus files, '+' joins (LXMERT: mscoco_train+mscoco_nominival+vgnococo)
    eval_split: str = "mscoco_minival"
    test_split: str | None = None
    max_tokens: int = 20  # LXMERT's max_seq_length
    max_regions: int = 36  # obj36
    answer_min_count: int = 1
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1
    token_mask_prob: float = 0.15
    region_mask_prob: float = 0.15
    mismatch_prob: float = 0.5  # 0 turns image-text matching off
    score_mismatched: bool = False  # also score MLM / masked regions of swapped pairs (LXMERT's code does)
    qa: bool = True
    # QA's fusion: "sum" (MCAN's) or "product" (pooled text * pooled image added, as in NLVR2's head,
    # whose pooling starts from QA's).
    qa_fusion: str = "sum"
    mlm_weight: float = 1.0
    object_weight: float = 1.0
    attr_weight: float = 1.0
    feature_weight: float = 1.0
    match_weight: float = 1.0
    qa_weight: float = 1.0
    synth_size: str = "default"
    synth_seed: int = 0
    max_images: int | None = None  # keep only the sentences of each split's first N images (sorted ids)


@TASKS.register("pretrain")
class PretrainTask(Task):
    Config = PretrainConfig
    name = "pretrain"
    primary_metric = "accuracy"  # the mean of the scored objectives' accuracies

    def __init__(self, config: PretrainConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        self.check_options({"qa_fusion": ("sum", "product")})
        for key in ("token_mask_prob", "region_mask_prob", "mismatch_prob"):
            if not 0.0 <= getattr(config, key) <= 1.0:
                raise UserError(f"task.{key}={getattr(config, key)}: must be in 0..1")
        for key in _OBJECTIVES:
            if getattr(config, f"{key}_weight") < 0:
                raise UserError(f"task.{key}_weight={getattr(config, f'{key}_weight')}: must be >= 0")
        self.answers: list[str] = []
        self.vocab: dict[str, int] = {}
        self.num_objects = self.num_attrs = 1
        self._train_stats: dict[str, Any] = {}

    def data_dir(self) -> tuple[Path, bool]:
        def make_config(**fields: Any) -> Any:
            from nas.synth import SynthPretrainConfig

            return SynthPretrainConfig(**fields)

        def generate(path: Path, config: Any, progress: bool) -> Any:
            from nas.synth import generate_pretrain

            return generate_pretrain(path, config, progress)

        return self.resolve_data_dir("lxmert", SYNTH_SIZES, make_config, generate)

    # ----------------------------------------------------------------- data
    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        train = self.config.train_split
        loaded = {split: self._sentences(root, split) for split in dict.fromkeys([train, *splits])}
        tokenizer = Tokenizer()
        tokens = {split: tokenizer(s.text for s in sentences) for split, sentences in loaded.items()}
        self.vocab = load_or_build_vocab(self.run_dir / "vocab.json",
                                         [[MASK], *(t for ts in tokens.values() for t in ts)])
        if self.vocab.get(MASK) is None:
            raise UserError(f"{self.run_dir / 'vocab.json'}: has no {MASK} token; it is not a pretrain run's "
                            "vocabulary")
        labelled = [a for s in loaded[train] if s.label for a in s.label]
        self.answers = load_or_build_answers(self.run_dir / "answer_dict.json", labelled,
                                             self.config.answer_min_count) if labelled else []
        answer_index = {a: i for i, a in enumerate(self.answers)}

        files = list(dict.fromkeys(FEATURE_FILES[p] for split in loaded for p in split.split("+")))
        sources = {}
        for file in files:
            features = load_tsv_features(root / file, self.config.max_regions, self.cache_dir(), self.progress)
            sources[file] = (features, load_region_labels(root / file, features, self.config.max_regions,
                                                          self.cache_dir()))
        dims = {file: features.feature_dim for file, (features, _) in sources.items()}
        if len(set(dims.values())) > 1:
            raise UserError("region features differ in size between files: "
                            + ", ".join(f"{root / file} ({dim})" for file, dim in dims.items()))
        self.num_objects = max(int(labels.objects.max()) for _, labels in sources.values()) + 1
        self.num_attrs = max(int(labels.attrs.max()) for _, labels in sources.values()) + 1
        masking = Masking(self.config.token_mask_prob, self.config.region_mask_prob, self.config.mismatch_prob,
                          self.config.score_mismatched, self.config.qa and bool(self.answers))
        datasets: dict[str, Dataset] = {}
        for split in dict.fromkeys(splits):
            datasets[split] = self._dataset(root, split, loaded[split], tokens[split], sources, answer_index, masking)
        self._train_stats = self._statistics(loaded[train], tokens[train], sources)
        meta = TaskMeta(vocab_size=len(self.vocab), feature_dim=next(iter(sources.values()))[0].feature_dim,
                        num_outputs=len(self.answers), word_vectors=word_vector_tensor(self.config.word_vectors,
                                                                                       self.vocab))
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    def _sentences(self, root: Path, split: str) -> list[Sentence]:
        sentences: list[Sentence] = []
        for part in split.split("+"):
            if part not in FEATURE_FILES:
                raise UserError(f"unknown pre-training split '{part}'. Valid splits: {', '.join(FEATURE_FILES)} "
                                "(join several with '+')")
            sentences += read_corpus(root / "lxmert" / f"{part}.json")
        if self.config.max_images is not None:
            kept = set(sorted({s.img_id for s in sentences})[:self.config.max_images])
            if len(kept) < len({s.img_id for s in sentences}):
                self.truncated.add(split)
            sentences = [s for s in sentences if s.img_id in kept]
        if not sentences:
            raise UserError(f"pre-training split '{split}' has no sentences")
        return sentences

    def _dataset(self, root: Path, split: str, sentences: list[Sentence], tokens: list[list[str]],
                 sources: dict[str, tuple], answer_index: dict[str, int], masking: Masking) -> PretrainDataset:
        files = list(dict.fromkeys(FEATURE_FILES[p] for p in split.split("+")))
        used = [sources[f] for f in files]
        images: list[tuple[int, int]] = []
        image_number: dict[str, int] = {}
        image_of = np.zeros(len(sentences), np.int64)
        for k, s in enumerate(sentences):
            if s.img_id not in image_number:
                where = next(((n, f[0].row_of[s.img_id]) for n, f in enumerate(used) if s.img_id in f[0].row_of), None)
                if where is None:
                    raise UserError(f"{root / files[0]}: no features for image {s.img_id!r} (corpus split '{split}')")
                image_number[s.img_id] = len(images)
                images.append(where)
            image_of[k] = image_number[s.img_id]
        answers = [_answer_draw(s.label, answer_index) for s in sentences]
        return PretrainDataset(encode(tokens, self.vocab, self.config.max_tokens), image_of, images, used, answers,
                               self.vocab[MASK], len(SPECIAL_TOKENS) + 1, len(self.vocab), masking,
                               None if split == self.config.train_split else _EVAL_SALT)

    def _statistics(self, sentences: list[Sentence], tokens: list[list[str]], sources: dict[str, tuple]
                    ) -> dict[str, Any]:
        """The majority guesses of the baseline, from the training split."""
        words = Counter(t for ts in tokens for t in ts)
        objects: Counter = Counter()
        attrs: Counter = Counter()
        for file in dict.fromkeys(FEATURE_FILES[p] for p in self.config.train_split.split("+")):
            _, labels = sources[file]
            objects.update(labels.objects[labels.objects >= 0].tolist())
            attrs.update(labels.attrs[(labels.attrs >= 0) & (labels.attrs_conf > 0)].tolist())
        answers = Counter(max(s.label, key=s.label.get) for s in sentences if s.label)
        majority = {"word": self.vocab.get(words.most_common(1)[0][0], 1) if words else 1,
                    "object": objects.most_common(1)[0][0] if objects else 0,
                    "attr": attrs.most_common(1)[0][0] if attrs else 0,
                    "answer": self.answers.index(answers.most_common(1)[0][0])
                    if answers and answers.most_common(1)[0][0] in self.answers else 0}
        return majority

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return PretrainHead(hidden, meta.vocab_size, self.num_objects, self.num_attrs, meta.feature_dim,
                            meta.num_outputs, self.config.flat_mlp, self.config.dropout, self.config.qa_fusion)

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the objectives' batch means, times the batch size (the loops sum losses
        over samples)."""
        c = self.config
        total = outputs["match"].float().sum() * 0.0  # keeps the graph when nothing is scored
        words = batch["mlm_target"] != IGNORE
        if c.mlm_weight and words.any():
            total = total + c.mlm_weight * F.cross_entropy(outputs["words"][words].float(), batch["mlm_target"][words])
        masked = batch["region_masked"]
        if masked.any():
            for key, weight in (("object", c.object_weight), ("attr", c.attr_weight)):
                if weight:
                    ce = F.cross_entropy(outputs[f"{key}s"][masked].float(), batch[f"{key}_target"][masked],
                                         reduction="none")
                    total = total + weight * (ce * batch[f"{key}_conf"][masked]).mean()
            if c.feature_weight:
                total = total + c.feature_weight * F.smooth_l1_loss(outputs["features"][masked].float(),
                                                                    batch["feature_target"][masked])
        if c.match_weight and c.mismatch_prob > 0:
            total = total + c.match_weight * F.binary_cross_entropy_with_logits(outputs["match"].float(),
                                                                                batch["matched"])
        answered = batch["answer_target"] != IGNORE
        if c.qa and c.qa_weight and answered.any():
            total = total + c.qa_weight * F.cross_entropy(outputs["answers"][answered].float(),
                                                          batch["answer_target"][answered])
        return total * len(batch["tokens"])

    def predict(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Per sample, [correct, scored] counts of each objective."""
        return _scores(batch, {"words": outputs["words"].argmax(-1), "objects": outputs["objects"].argmax(-1),
                               "attrs": outputs["attrs"].argmax(-1), "match": (outputs["match"] > 0).float(),
                               "answers": outputs["answers"].argmax(-1) if outputs["answers"].shape[1] else None})

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        totals = {key: [0, 0] for key in ("mlm", "object", "attr", "match", "qa")}
        for p in predictions:
            for key in totals:
                totals[key][0] += p[key][0]
                totals[key][1] += p[key][1]
        c = self.config
        trained = {"mlm": c.mlm_weight > 0, "object": c.object_weight > 0, "attr": c.attr_weight > 0,
                   "match": c.match_weight > 0 and c.mismatch_prob > 0, "qa": c.qa and c.qa_weight > 0}
        metrics: dict[str, Any] = {f"{key}_accuracy": round(100.0 * right / count, 2)
                                   for key, (right, count) in totals.items() if count and trained[key]}
        # The primary metric: the mean over the trained objectives with a target (attributes are a side score).
        scored = [metrics[f"{key}_accuracy"] for key in ("mlm", "object", "match", "qa")
                  if f"{key}_accuracy" in metrics]
        metrics["accuracy"] = round(sum(scored) / len(scored), 2) if scored else 0.0
        metrics["samples"] = len(predictions)
        return metrics

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """The most frequent training word, object class, attribute and answer, and 'matched' always."""
        m = self._train_stats
        predictions = []
        for start in range(0, len(dataset), 256):
            batch = dataset.__getitems__(list(range(start, min(start + 256, len(dataset)))))
            guesses = {"words": torch.full_like(batch["mlm_target"], m["word"]),
                       "objects": torch.full_like(batch["object_target"], m["object"]),
                       "attrs": torch.full_like(batch["attr_target"], m["attr"]),
                       "match": torch.ones_like(batch["matched"]),
                       "answers": torch.full_like(batch["answer_target"], m["answer"]) if self.answers else None}
            predictions += _scores(batch, guesses)
        return {"rule": "majority word, object, attribute and answer; always 'matched'",
                **self.evaluate(split, dataset, predictions)}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        parts = " ".join(f"{key}={metrics[f'{key}_accuracy']:.2f}" for key in ("mlm", "object", "match", "qa")
                         if f"{key}_accuracy" in metrics)
        return f"accuracy={metrics['accuracy']:.2f} ({parts})"

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """Per-sample objective scores (pre-training has no evaluation server)."""
        check_complete(path, [p["index"] for p in predictions], list(range(len(dataset))), "sample")
        return atomic_write_json(path, sorted(predictions, key=lambda p: p["index"]), indent=None)


def _answer_draw(label: dict[str, float] | None, answer_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Answer ids and probabilities (scores normalised) of a label, keeping answers in the vocabulary."""
    if not label:
        return None
    kept = [(answer_index[a], s) for a, s in label.items() if a in answer_index and s > 0]
    if not kept:
        return None
    ids, scores = np.asarray([i for i, _ in kept], np.int64), np.asarray([s for _, s in kept], np.float64)
    return ids, scores / scores.sum()


def _scores(batch: dict[str, torch.Tensor], guesses: dict[str, torch.Tensor | None]) -> list[dict]:
    def counts(guess: torch.Tensor, target: torch.Tensor, scored: torch.Tensor) -> tuple[list[int], list[int]]:
        right = ((guess == target) & scored).reshape(len(target), -1).sum(1)
        return right.tolist(), scored.reshape(len(target), -1).sum(1).tolist()

    words = counts(guesses["words"], batch["mlm_target"], batch["mlm_target"] != IGNORE)
    objects = counts(guesses["objects"], batch["object_target"], batch["object_target"] != IGNORE)
    attrs = counts(guesses["attrs"], batch["attr_target"], (batch["attr_target"] != IGNORE) & (batch["attr_conf"] > 0))
    match = (guesses["match"] == batch["matched"]).long().tolist()
    answered = batch["answer_target"] != IGNORE
    qa = counts(guesses["answers"], batch["answer_target"], answered) if guesses["answers"] is not None else (
        [0] * len(match), [0] * len(match))
    return [{"index": int(i), "mlm": [words[0][k], words[1][k]], "object": [objects[0][k], objects[1][k]],
             "attr": [attrs[0][k], attrs[1][k]], "match": [match[k], 1], "qa": [qa[0][k], qa[1][k]]}
            for k, i in enumerate(batch["index"].tolist())]
