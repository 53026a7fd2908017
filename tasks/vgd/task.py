"""Visual grounding (referring-expression comprehension) on the RefCOCO family.

Data layout under ``task.data_dir``::

    <dataset>/instances.json, <dataset>/refs(<split_by>).p     (refer's release; task.annotations=refer)
    anns/<dataset>.json                                         (SimREC's; task.annotations=simrec)
    coco_extract/train2014/COCO_train2014_%012d.jpg.npz         (candidate boxes and their features)

The model scores every candidate box against the expression and regresses the
best one (MmNas); the metric is Acc@0.5 under the MmNas or SimREC IoU convention.
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
from torch.utils.data import Dataset

from nas.data import BatchConcat
from nas.errors import UserError
from nas.features import load_region_features
from nas.io import atomic_write_json
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta, check_complete, first_images
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.vgd.annotations import read_refer, read_simrec
from tasks.vgd.boxes import decode_deltas
from tasks.vgd.dataset import GroundingDataset
from tasks.vgd.head import GroundingHead
from tasks.vgd.metric import CONVENTIONS, accuracy_at_05, evaluate_vgd_files

__all__ = ["VgdTask", "VgdConfig", "SYNTH_SIZES"]

SYNTH_SIZES = {
    "tiny": {"train_images": 40, "val_images": 12, "testA_images": 12, "testB_images": 12, "feature_dim": 32,
             "max_objects": 4,
             "num_candidates": 16},
    "small": {"train_images": 600, "val_images": 150, "testA_images": 150, "testB_images": 150,
              "feature_dim": 128},
    "default": {},
}


@dataclass
class VgdConfig:
    name: str = "vgd"
    data_dir: str | None = None  # None = the built-in generated dataset
    cache_dir: str | None = None
    dataset: str = "refcoco"  # refcoco | refcoco+ | refcocog (a folder under data_dir)
    split_by: str = "unc"  # unc | umd | google: which refs(<split_by>).p
    annotations: str = "refer"  # refer: refs pickle + instances.json; simrec: anns/<dataset>.json
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "testA"  # MmNas reports testA; unc also has testB, umd has test
    iou_convention: str = "mmnas"  # mmnas: +1 pixel areas, IoU >= 0.5; simrec: continuous, IoU > 0.5
    positive_iou: float = 0.5  # candidates at least this close to the target get score targets
    loss: str = "kld"  # kld: KL to IoU-derived targets (MmNas); bce: per-candidate positive/negative
    regression_weight: float = 0.5  # weight of the smooth-L1 box-delta loss
    max_tokens: int = 15
    max_regions: int = 100
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1  # in the head's AttFlat MLPs (MmNas 0.1); space.dropout covers the blocks
    synth_size: str = "default"
    synth_seed: int = 0
    # Keep only the expressions of each split's first N images, by ascending image id (refs
    # are not stored per image); only their features are read. The vocabulary still counts
    # every expression, so the model has the shape of a full run. --tiny: 512, --fast: 4096.
    max_images: int | None = None


@TASKS.register("vgd")
class VgdTask(Task):
    Config = VgdConfig
    name = "vgd"
    primary_metric = "accuracy"

    def __init__(self, config: VgdConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_options({"iou_convention": CONVENTIONS, "annotations": ("refer", "simrec"),
                            "loss": ("kld", "bce")})
        self.check_max_images()
        self.targets: dict[int, np.ndarray] = {}

    def data_dir(self) -> tuple[Path, bool]:
        from nas.synth import SynthReferConfig, generate_refer

        marker = "anns" if self.config.annotations == "simrec" else self.config.dataset
        return self.resolve_data_dir(marker, SYNTH_SIZES, SynthReferConfig, generate_refer)

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        if self.config.annotations == "refer":
            expressions = read_refer(root, self.config.dataset, self.config.split_by)
        else:
            expressions = read_simrec(root, self.config.dataset)
        names = list(dict.fromkeys(part for split in splits for part in split.split("+")))
        for name in names:
            if name not in expressions:
                raise UserError(f"unknown {self.config.dataset} split '{name}'. Splits in the annotations: "
                                f"{', '.join(expressions)}")
            if not expressions[name]:
                raise UserError(f"{self.config.dataset} split '{name}' has no expressions in the "
                                f"{self.config.annotations} annotations under {root}")
        tokenizer = Tokenizer()
        tokens = {split: tokenizer(e.text for e in items) for split, items in expressions.items()}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for split in tokens for t in tokens[split]))
        datasets: dict[str, Dataset] = {}
        for name in names:
            keep = first_images((e.image_id for e in expressions[name]), self.config.max_images)
            chosen = [i for i, e in enumerate(expressions[name]) if keep is None or e.image_id in keep]
            items = [expressions[name][i] for i in chosen]
            if len(items) < len(expressions[name]):
                self.truncated.add(name)
            features = load_region_features(root / "coco_extract" / "train2014", (e.image_id for e in items),
                                            self.config.max_regions, self.cache_dir(), self.progress)
            encoded = encode([tokens[name][i] for i in chosen], vocab, self.config.max_tokens)
            dataset = GroundingDataset(name, items, encoded, features, self.config.positive_iou,
                                       self.config.iou_convention)
            self.targets.update(zip(dataset.sent_ids.tolist(), dataset.targets))
            datasets[name] = dataset
        for split in splits:
            if "+" in split:
                datasets[split] = BatchConcat([datasets[part] for part in split.split("+")])
        vectors = word_vector_tensor(self.config.word_vectors, vocab)
        first = datasets[names[0]]
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=first.features.feature_dim, num_outputs=1,
                        word_vectors=vectors)
        return TaskData(splits={s: datasets[s] for s in splits}, meta=meta,
                        info={"data_dir": str(root), "builtin": builtin})

    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return GroundingHead(hidden, self.config.flat_mlp, self.config.dropout)

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores, deltas = outputs  # (B, N), (B, N, 4)
        positive = batch["positive"]
        valid = positive.any(dim=1)  # an expression with no positive candidate teaches nothing
        if self.config.loss == "kld":
            log_probs = F.log_softmax(scores, dim=1)
            target = batch["target_scores"]
            per_box = torch.where(target > 0, target * (target.clamp(min=1e-12).log() - log_probs),
                                  torch.zeros_like(target))
            match = per_box.sum(1)[valid].sum()
        else:
            keep = torch.arange(scores.shape[1], device=scores.device)[None] < batch["num_regions"][:, None]
            bce = F.binary_cross_entropy_with_logits(scores, positive.float(), reduction="none")
            match = (bce * keep)[valid].sum()
        # Smooth-L1 on the positives' deltas, averaged over each expression's positives (MmNas).
        per_box = F.smooth_l1_loss(deltas, batch["target_deltas"], reduction="none").sum(-1)  # (B, N)
        counts = positive.sum(1).clamp(min=1)
        regression = ((per_box * positive).sum(1) / counts)[valid].sum()
        return match + self.config.regression_weight * regression

    def predict(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor]
                ) -> list[dict[str, Any]]:
        scores, deltas = outputs
        best = scores.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        proposals = batch["boxes"][rows, best].cpu().numpy()
        chosen = deltas[rows, best].float().cpu().numpy()
        size = batch["image_size"].cpu().numpy()
        boxes = decode_deltas(proposals, chosen, size[:, 0], size[:, 1])
        return [{"sent_id": int(sid), "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                for sid, b in zip(batch["sent_id"].tolist(), boxes)]

    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        predicted = np.asarray([p["bbox"] for p in predictions], np.float32).reshape(-1, 4)
        predicted[:, 2:] += predicted[:, :2]  # xywh -> xyxy
        targets = np.stack([self.targets[p["sent_id"]] for p in predictions]) if predictions else predicted
        accuracy = accuracy_at_05(predicted, targets, self.config.iou_convention)
        return {"accuracy": round(accuracy, 2), "num_expressions": len(predictions),
                "convention": self.config.iou_convention}

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """Expected Acc@0.5 of picking one candidate box uniformly at random (no regression)."""
        parts = dataset.parts if isinstance(dataset, BatchConcat) else [dataset]
        hits = []
        for part in parts:
            counts = part.features.num_regions[part.rows]
            threshold = part.ious >= 0.5 if self.config.iou_convention == "mmnas" else part.ious > 0.5
            hits.append(threshold.sum(1) / np.maximum(counts, 1))
        return {"accuracy": round(100.0 * float(np.concatenate(hits).mean()), 2), "rule": "random candidate"}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return f"Acc@0.5={metrics['accuracy']:.2f} ({metrics['num_expressions']} expressions)"

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """One {sent_id, bbox: [x, y, w, h] in pixels} per expression of the split."""
        check_complete(path, [p["sent_id"] for p in predictions], _sent_ids(dataset), "sent_id")
        self.warn_if_subset(path, _split_names(dataset))
        return atomic_write_json(path, predictions, indent=None)

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--predictions", help="predictions JSON: a list of {sent_id, bbox [x, y, w, h]}")
        parser.add_argument("--refs", help="refs(<split_by>).p of the dataset (read without running code)")
        parser.add_argument("--instances", help="instances.json of the dataset")
        parser.add_argument("--split", help="split to score, e.g. val, testA, testB, test")
        parser.add_argument("--convention", default="mmnas", choices=list(CONVENTIONS),
                            help="IoU convention (default mmnas: +1 pixel areas, IoU >= 0.5)")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k}" for k in ("predictions", "refs", "instances", "split") if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task vgd needs {', '.join(missing)}")
        return evaluate_vgd_files(args.predictions, args.refs, args.instances, args.split,
                                  args.convention).to_dict()




def _split_names(dataset: Dataset) -> list[str]:
    if isinstance(dataset, BatchConcat):
        return [name for part in dataset.parts for name in _split_names(part)]
    if isinstance(dataset, GroundingDataset):
        return [dataset.split]
    return _split_names(dataset.dataset)  # a Subset


def _sent_ids(dataset: Dataset) -> list[int]:
    if isinstance(dataset, BatchConcat):
        return [i for part in dataset.parts for i in _sent_ids(part)]
    if isinstance(dataset, GroundingDataset):
        return dataset.sent_ids.tolist()
    base = _sent_ids(dataset.dataset)  # a Subset
    return [base[i] for i in dataset.indices]
