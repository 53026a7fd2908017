"""The caption task: COCO-captions references, region features, and VQA on the same images.

Data layout under ``task.data_dir`` (``task.dataset=coco``; MCAN's ``datasets/`` folder plus COCO's
caption annotations)::

    annotations/captions_{train2014,val2014}.json     COCO captions (about 5 references per image)
    annotations/image_info_test2015.json              the test images (no captions)
    coco_extract/{train2014,val2014,test2015}/*.npz   bottom-up region features, as for VQA
    vqa/...                                           VQA v2 files of the same images (optional)

``task.dataset=flickr30k`` reads ``flickr30k/captions_{train,val,test}.json`` in the same COCO
layout (Karpathy's split, converted as users do for pycocoevalcap) with features in
``flickr30k/features/{train,val,test}``; it has no questions.

The model writes captions (scored with BLEU-1..4, ROUGE-L and CIDEr-D, pycocoevalcap's
definitions; ``cider_d`` selects the model) and, when the data has VQA questions and
``task.vqa_weight > 0``, the same checkpoint answers them (``vqa_accuracy``, the official VQA
metric). METEOR and SPICE need Java: ``nas evaluate --task caption`` reports them.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from nas.errors import UserError
from nas.features import load_region_features
from nas.io import atomic_write_json
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta, check_complete, first_images
from nas.text import word_vector_tensor
from tasks.caption.baseline import nearest_neighbour_captions
from tasks.caption.dataset import CaptionImageSet, CaptionSplit, CaptionTrainingSet, QuestionSet
from tasks.caption.head import CaptionHead, DecodingSettings
from tasks.caption.metrics import CiderD, evaluate_captions, tokenize_caption
from tasks.caption.references import read_references, read_split_images
from tasks.caption.results import read_caption_results, write_caption_results
from tasks.caption.vocab import SPECIAL, decode_caption, encode_captions, encode_questions, \
    load_or_build_caption_vocab
from tasks.vqa.answer_norm import prep_answer
from tasks.vqa.answers import load_or_build_answer_vocab, soft_scores
from tasks.vqa.evaluation import evaluate_vqa
from tasks.vqa.task import read_split as read_vqa_split, split_files

__all__ = ["CaptionTask", "CaptionConfig", "LAYOUTS"]

log = logging.getLogger(__name__)

SYNTH_SIZES = {
    "tiny": {"train_images": 60, "val_images": 20, "test_images": 20, "questions_per_image": 4, "feature_dim": 32},
    "small": {"train_images": 800, "val_images": 200, "test_images": 200, "feature_dim": 128},
    "default": {},
}

# dataset -> split -> (references or image-info file, feature folder, VQA split or None)
LAYOUTS: dict[str, dict[str, tuple[str, str, str | None]]] = {
    "coco": {"train": ("annotations/captions_train2014.json", "coco_extract/train2014", "train"),
             "val": ("annotations/captions_val2014.json", "coco_extract/val2014", "val"),
             "test": ("annotations/image_info_test2015.json", "coco_extract/test2015", "test")},
    "flickr30k": {split: (f"flickr30k/captions_{split}.json", f"flickr30k/features/{split}", None)
                  for split in ("train", "val", "test")},
}
# The keys of ``evaluate``: pycocoevalcap's scores times 100, as papers print them.
_METRIC_KEYS = {"Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4",
                "ROUGE_L": "rouge_l", "CIDEr": "cider_d"}


@dataclass
class CaptionConfig:
    name: str = "caption"
    data_dir: str | None = None  # see the layout above; None = the built-in generated dataset
    cache_dir: str | None = None
    dataset: str = "coco"  # coco | flickr30k: which file layout data_dir has
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "test"
    max_caption_words: int = 20  # words kept of each reference caption (BOS and EOS come on top)
    max_question_words: int = 14
    max_regions: int = 100  # regions kept per image (bottom-up features have 10 to 100)
    word_min_count: int = 5  # rarer words are UNK (Karpathy's COCO preprocessing)
    answer_min_count: int = 9  # MCAN's answer vocabulary rule
    vqa_weight: float = 1.0  # weight of the VQA loss on the same images; 0 trains captions only
    beam_size: int = 3  # evaluation decoding; 1 is greedy
    length_penalty: float = 0.0  # beam score = sum log-prob / length ** length_penalty
    max_decode_length: int = 22  # generated tokens, EOS included
    scst: bool = False  # self-critical training (CIDEr-D reward); start it with --init
    # Captions sampled per image in self-critical training. 1: Rennie et al.'s greedy baseline; K > 1:
    # each sample's baseline is the mean reward of the other K - 1 (Luo 2020), with no greedy decode.
    scst_samples: int = 1
    flat_mlp: int = 512
    dropout: float = 0.1
    word_vectors: str | None = None
    synth_size: str = "default"
    synth_seed: int = 0
    max_images: int | None = None  # keep each split's first N images (ascending id)


@TASKS.register("caption")
class CaptionTask(Task):
    Config = CaptionConfig
    name = "caption"
    primary_metric = "cider_d"
    needs_generation = True

    def __init__(self, config: CaptionConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        self.check_options({"dataset": tuple(LAYOUTS)})
        for key in ("max_caption_words", "max_question_words", "max_regions", "word_min_count", "answer_min_count",
                    "beam_size", "scst_samples"):
            if getattr(config, key) < 1:
                raise UserError(f"task.{key}={getattr(config, key)}: must be at least 1")
        if config.max_decode_length < 2:
            raise UserError(f"task.max_decode_length={config.max_decode_length}: must be at least 2")
        if config.vqa_weight < 0:
            raise UserError(f"task.vqa_weight={config.vqa_weight}: must be >= 0")
        self.words: list[str] = []
        self.answers: list[str] = []
        self.annotations: dict[int, dict] = {}  # question_id -> VQA annotation
        self.splits: dict[str, CaptionSplit] = {}
        self._cider: CiderD | None = None  # self-critical reward, document frequencies of the training split
        self._train_split: str | None = None

    # ----------------------------------------------------------------- data
    def data_dir(self) -> tuple[Path, bool]:
        from nas.synth import SynthCaptionConfig, generate_caption

        marker = LAYOUTS[self.config.dataset]["train"][0]

        def make_config(**fields: Any) -> SynthCaptionConfig:
            return SynthCaptionConfig(layout=self.config.dataset, **fields)

        return self.resolve_data_dir(marker, SYNTH_SIZES, make_config, generate_caption)

    def _layout(self, name: str) -> tuple[str, str, str | None]:
        layout = LAYOUTS[self.config.dataset]
        if name not in layout:
            raise UserError(f"unknown caption split '{name}'. Valid splits: {', '.join(layout)}")
        return layout[name]

    def _read_images(self, root: Path, name: str) -> tuple[list[int], dict[int, list[str]] | None]:
        path = root / self._layout(name)[0]
        if not path.is_file():
            raise UserError(f"{path}: not found (split '{name}' of task.dataset={self.config.dataset})")
        return read_split_images(path)

    def _read_questions(self, root: Path, name: str) -> tuple[list[dict], list[dict] | None] | None:
        vqa_split = self._layout(name)[2]
        if vqa_split is None or self.config.vqa_weight == 0 or not split_files(root, vqa_split)[0].is_file():
            return None
        split = read_vqa_split(root, vqa_split)
        return split.questions, split.annotations

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        names = list(dict.fromkeys(splits))
        images = {name: self._read_images(root, name) for name in names}
        questions = {name: self._read_questions(root, name) for name in names}
        train = self.config.train_split
        if train not in images:
            images[train] = self._read_images(root, train)
            questions[train] = self._read_questions(root, train)
        if images[train][1] is None:
            raise UserError(f"task.train_split={train}: has no reference captions to train on")

        # One vocabulary for captions and questions, from the training split (saved with the run).
        caption_tokens = {name: {i: [tokenize_caption(c).split() for c in refs[i]] for i in ids}
                          for name, (ids, refs) in images.items() if refs is not None}
        question_tokens = {name: [tokenize_caption(q["question"]).split() for q in found[0]]
                           for name, found in questions.items() if found is not None}
        vocab = load_or_build_caption_vocab(
            self.run_dir / "vocab.json",
            [*(t for per_image in caption_tokens[train].values() for t in per_image),
             *question_tokens.get(train, [])], self.config.word_min_count)
        self.words = [word for word, _ in sorted(vocab.items(), key=lambda item: item[1])]
        labelled = [questions[n][1] for n in (train,) if questions.get(n) and questions[n][1] is not None]
        if labelled:
            self.answers = load_or_build_answer_vocab(self.run_dir / "answer_dict.json", labelled[0],
                                                      self.config.answer_min_count)
        answer_index = {a: i for i, a in enumerate(self.answers)}

        for name in names:
            ids, refs = images[name]
            keep = first_images(ids, self.config.max_images)
            kept = [i for i in ids if keep is None or i in keep]
            if len(kept) < len(ids):
                self.truncated.add(name)
            features = load_region_features(root / self._layout(name)[1], kept, self.config.max_regions,
                                            self.cache_dir(), self.progress)
            row_of = features.row_of
            if refs is not None:
                rows = [row_of[i] for i in kept for _ in refs[i]]
                tokens = encode_captions([t for i in kept for t in caption_tokens[name][i]], vocab,
                                         self.config.max_caption_words)
            else:
                rows, tokens = [], np.zeros((0, self.config.max_caption_words + 2), np.int64)
            question_set = None
            if questions.get(name) is not None and self.answers:
                found, annotations = questions[name]
                picks = [k for k, q in enumerate(found) if q["image_id"] in row_of]
                for k in picks:
                    if annotations is not None:
                        self.annotations[found[k]["question_id"]] = annotations[k]
                question_set = QuestionSet(
                    question_ids=np.asarray([found[k]["question_id"] for k in picks], np.int64),
                    image_rows=np.asarray([row_of[found[k]["image_id"]] for k in picks], np.int64),
                    tokens=encode_questions([question_tokens[name][k] for k in picks], vocab,
                                            self.config.max_question_words),
                    targets=None if annotations is None else
                    [soft_scores(annotations[k]["answers"], answer_index) for k in picks],
                    num_answers=len(self.answers))
            self.splits[name] = CaptionSplit(name, kept, None if refs is None else {i: refs[i] for i in kept},
                                             features, np.asarray(rows, np.int64), tokens, question_set)
        self._train_split = train
        datasets: dict[str, Dataset] = {name: CaptionTrainingSet(self.splits[name]) for name in names}
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=self.splits[names[0]].features.feature_dim,
                        num_outputs=len(self.answers), word_vectors=word_vector_tensor(self.config.word_vectors,
                                                                                       vocab))
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    def evaluation_view(self, dataset: Dataset) -> Dataset:
        """Captions are evaluated per image: the images of a split, or of a search's held-out captions."""
        if isinstance(dataset, CaptionTrainingSet):
            return dataset.images
        if isinstance(dataset, Subset) and isinstance(dataset.dataset, CaptionTrainingSet):
            return dataset.dataset.images_of(dataset.indices)
        return dataset

    def is_labelled(self, dataset: Dataset) -> bool:
        return _split_of(dataset).references is not None

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        decoding = DecodingSettings(self.config.beam_size, self.config.length_penalty, self.config.max_decode_length)
        answers = meta.num_outputs if self.config.vqa_weight > 0 else 0
        return CaptionHead(hidden, meta.vocab_size, answers, self.config.flat_mlp, self.config.dropout, SPECIAL,
                           decoding, self.config.scst, self.config.scst_samples)

    def loss(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if outputs["objective"] == "scst":
            loss = self._self_critical_loss(outputs, batch)
        else:  # next-word or masked-word cross-entropy, summed over the supervised words
            loss = F.cross_entropy(outputs["word_logits"].float(), outputs["word_targets"], reduction="sum")
        if "answer_logits" in outputs and "target" in batch:
            # MmNas/MCAN: BCE on soft scores, summed over answers and the batch.
            loss = loss + self.config.vqa_weight * F.binary_cross_entropy_with_logits(
                outputs["answer_logits"].float(), batch["target"], reduction="sum")
        return loss

    def _self_critical_loss(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-(CIDEr-D(sample) - baseline) * log p(sample), averaged over each image's K samples and
        summed over the batch. The baseline is the greedy caption's CIDEr-D (Rennie et al. 2017) with
        one sample, the mean of the other samples' (Luo 2020, arXiv:2003.09971) with more."""
        if self._cider is None:
            references = self.splits[self._train_split].references
            self._cider = CiderD({i: [tokenize_caption(c) for c in refs] for i, refs in references.items()})
        samples = outputs["samples_per_image"]
        image_ids = batch["image_id"].tolist()
        sampled = [decode_caption(row, self.words) for row in outputs["sample_tokens"].tolist()]
        rewards = self._rewards([i for i in image_ids for _ in range(samples)], sampled).reshape(-1, samples)
        if samples == 1:
            greedy = [decode_caption(row, self.words) for row in outputs["greedy_tokens"].tolist()]
            baseline = self._rewards(image_ids, greedy)[:, None]  # (B, 1)
        else:
            baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (samples - 1)  # (B, K)
        advantage = torch.as_tensor((rewards - baseline).reshape(-1) / samples, dtype=torch.float32,
                                    device=outputs["sample_log_prob"].device)  # (B*K,)
        return -(advantage * outputs["sample_log_prob"].float()).sum()

    def _rewards(self, image_ids: list[int], captions: list[str]) -> np.ndarray:
        """CIDEr-D of each row's caption (a batch can hold one image in several rows)."""
        return np.asarray(self._cider.score_many(zip(image_ids, captions)), np.float64)

    def predict(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        if "caption_tokens" in outputs:
            for image_id, row in zip(batch["image_id"].tolist(), outputs["caption_tokens"].tolist()):
                entries.append({"image_id": int(image_id), "caption": decode_caption(row, self.words)})
        if "answer_logits" in outputs and "question_id" in batch:
            best = outputs["answer_logits"].argmax(dim=-1)  # (B, Q)
            for qid, answer in zip(batch["question_id"].reshape(-1).tolist(), best.reshape(-1).tolist()):
                if qid >= 0:
                    entries.append({"question_id": int(qid), "answer": self.answers[answer]})
        return entries

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        references = _split_of(dataset).references
        if references is None:
            raise UserError(f"split '{split}' has no reference captions to evaluate against")
        captions = {p["image_id"]: p["caption"] for p in predictions if "caption" in p}
        scores = evaluate_captions({i: references[i] for i in captions}, captions, external=False)
        metrics: dict[str, Any] = {key: round(100.0 * float(scores[name]), 4) for name, key in _METRIC_KEYS.items()}
        answers = [p for p in predictions if "answer" in p]
        if answers and all(p["question_id"] in self.annotations for p in answers):
            metrics["vqa_accuracy"] = evaluate_vqa([self.annotations[p["question_id"]] for p in answers],
                                                   answers).overall
        return metrics

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        shown = [f"cider_d={metrics['cider_d']:.2f}", f"bleu_4={metrics['bleu_4']:.2f}"]
        if "vqa_accuracy" in metrics:
            shown.append(f"vqa_accuracy={metrics['vqa_accuracy']:.2f}")
        return " ".join(shown)

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """A nearest-neighbour caption (Devlin et al. 2015) and, with questions, the majority answer."""
        train_split, target = _split_of(train), _split_of(dataset)
        if target.references is None:
            return {}
        captions = nearest_neighbour_captions(train_split, target)
        scores = evaluate_captions({i: target.references[i] for i in captions}, captions, external=False)
        result: dict[str, Any] = {key: round(100.0 * float(scores[name]), 4) for name, key in _METRIC_KEYS.items()}
        rule = "nearest-neighbour caption"
        questions = target.questions
        if self.answers and questions is not None and questions.targets is not None and train_split.questions:
            counts = Counter(prep_answer(self.annotations[int(q)]["multiple_choice_answer"])
                             for q in train_split.questions.question_ids if int(q) in self.annotations)
            majority = counts.most_common(1)[0][0]
            answers = [{"question_id": int(q), "answer": majority} for q in questions.question_ids]
            result["vqa_accuracy"] = evaluate_vqa([self.annotations[a["question_id"]] for a in answers],
                                                  answers).overall
            rule += f"; majority answer '{majority}'"
        return {"rule": rule, **result}

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """COCO's captioning results file ``[{image_id, caption}]``, one per image; with questions, the
        VQA answers go beside it as ``vqa_<split>_results.json`` (VQA's server format)."""
        split = _split_of(dataset)
        captions = [p for p in predictions if "caption" in p]
        written = write_caption_results(path, captions, split.image_ids)
        answers = [p for p in predictions if "answer" in p]
        if answers and split.questions is not None:
            answer_path = path.with_name(path.name.replace(f"{self.name}_", "vqa_", 1))
            check_complete(answer_path, [p["question_id"] for p in answers],
                           split.questions.question_ids.tolist(), "question_id")
            atomic_write_json(answer_path, [{"question_id": p["question_id"], "answer": p["answer"]}
                                            for p in answers], indent=None)
        self.warn_if_subset(path, [split.name])
        return written

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--references", help="caption references JSON (COCO's captions_*.json layout)")
        parser.add_argument("--results", help="results JSON: a list of {image_id, caption}")
        parser.add_argument("--no-java", action="store_true",
                            help="skip METEOR and SPICE (pycocoevalcap runs them in Java, ~10 s to start)")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k}" for k in ("references", "results") if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task caption needs {', '.join(missing)}")
        references = read_references(Path(args.references))
        results = read_caption_results(Path(args.results), references)
        java = not getattr(args, "no_java", False)
        scores = evaluate_captions({i: references.captions[i] for i in results}, results, external=java,
                                   source=str(args.results))
        if not java:
            scores.update(METEOR="unavailable: --no-java", SPICE="unavailable: --no-java")
        # Papers print pycocoevalcap's fractions times 100; METEOR and SPICE may be "unavailable: <why>".
        scaled = {name: 100.0 * value if isinstance(value, float) else value for name, value in scores.items()}
        return {"num_images": len(results), "scale": "pycocoevalcap x 100 (CIDEr is CIDEr-D)", **scaled}


def _split_of(dataset: Dataset) -> CaptionSplit:
    if isinstance(dataset, (CaptionTrainingSet, CaptionImageSet)):
        return dataset.split
    if isinstance(dataset, Subset):
        return _split_of(dataset.dataset)
    raise TypeError(f"not a caption dataset: {type(dataset).__name__}")
