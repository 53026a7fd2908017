"""The CLEVR-Ref+ task: segment (and box) the objects a referring expression names.

Data layout under ``task.data_dir`` (CLEVR-Ref+'s release next to IEP-Ref's extracted features)::

    scenes/clevr_ref+_{train,val}_scenes.json     CLEVR scenes + obj_mask (1-based keys, RLE 320x480)
    refexps/clevr_ref+_{train,val}_refexps.json   expressions; the program's last node has _output
    features/{train,val}_features.h5              "features" (images, C, H, W), row k = image index k

Interface for the search spaces (what a batch holds): the H x W feature map becomes N = H*W
"regions" in row-major cell order, so region-based spaces (``mmnas``, ``lxmert``) run unchanged:

    tokens       (B, T)     the expression, tokenised with ``nas.text.Tokenizer``
    features     (B, N, C)  the cells' feature vectors
    boxes        (B, N, 4)  each cell's xyxy pixel box on the 320 x 480 image
    num_regions  (B,)       N for every row (every cell is real)
    image_size   (B, 2)     (320, 480)
    target       (B, N)     the share of each cell that the referred objects' masks cover
    refexp       (B,)       the expression's position in the refexps file
    image_index  (B,)
    program      (B, P)     the ground-truth program: <START>, prefix-order program-token ids, <END>,
                            <NULL>-padded (IEP-Ref's program vocabulary, ``tasks/clevr_ref/programs.py``)
    program_known (B,)      bool: the program may be used (the first ``task.num_programs`` training
                            expressions when set, IEP's "a few ground-truth programs"; every one in eval)

``prepare``'s meta is a ``ClevrRefMeta``: the program vocabulary (built from the training split's
programs) and the longest training program's length, for spaces that execute programs
(``modules``); other spaces ignore both.

The head (``GridMaskHead``) gives one foreground logit per cell, (B, N); any other model for
this task must return the same. The loss is BCE against ``target``, its foreground term weighted
by ``task.positive_weight`` (mean over cells, summed over expressions). A prediction is the
logit map upsampled bilinearly to 320 x 480 and thresholded at 0; its box is the mask's tight box. Scores (``tasks/clevr_ref/metric.py``): cumulative IoU
(primary, IEP-Ref's), mean IoU and box Acc@0.5, with per-family cumulative IoU on the built-in
data. The results file (``tasks/clevr_ref/results.py``) lists ``{refexp_index, image_index,
mask_rle, box}`` per expression and is scored by ``nas evaluate --task clevr_ref``. With no
``data_dir``, the built-in generated dataset (``nas data synth --task clevr_ref``) is used.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from nas.errors import UserError
from nas.io import read_json
from nas.masks import mask_box
from nas.registry import TASKS
from nas.rle import encode_rle
from nas.task import Task, TaskData, TaskMeta, first_images
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.clevr_ref.dataset import ClevrRefDataset, object_coverage
from tasks.clevr_ref.features import read_grid_features
from tasks.clevr_ref.head import GridMaskHead
from tasks.clevr_ref.programs import encode_programs, program_vocab, to_prefix_tokens
from tasks.clevr_ref.refexps import Refexp, read_refexps
from tasks.clevr_ref.results import evaluate_results_files, score_predictions, write_results
from tasks.clevr_ref.scenes import MASK_HEIGHT, MASK_WIDTH, ClevrScene, read_scenes

__all__ = ["ClevrRefConfig", "ClevrRefMeta", "ClevrRefTask", "SPLITS", "SYNTH_SIZES"]

SPLITS = ("train", "val")

# Built-in dataset sizes (SynthClevrRefConfig fields); tests and smoke runs use "tiny".
SYNTH_SIZES = {
    "tiny": {"train_images": 40, "val_images": 12, "grid": 8, "feature_dim": 16, "iep_files": False},
    "small": {"train_images": 600, "val_images": 150, "grid": 16, "feature_dim": 64, "iep_files": False},
    "default": {},
}


@dataclass
class ClevrRefConfig:
    name: str = "clevr_ref"
    data_dir: str | None = None  # CLEVR-Ref+ folder (layout above); None = the built-in generated dataset
    cache_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "val"  # CLEVR-Ref+'s labelled splits are train and val; its results file is written
    max_tokens: int = 24
    # Weight of the foreground term of the per-cell BCE. Above 1 a cell lights up (logit > 0) at a smaller
    # covered share (1/(1+w)), so a referent the model is unsure of is still segmented rather than left out:
    # the quick start's val cIoU is 49.13 at 3 against 32.83 at 1 (benchmarks/README.md).
    positive_weight: float = 3.0
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1
    synth_size: str = "default"
    synth_seed: int = 0
    max_images: int | None = None  # keep only the expressions of each split's first N images
    # Ground-truth programs a model may learn from: those of the first N training expressions (IEP-Ref's
    # program generator is trained on a few); null = every one. Evaluation splits always have theirs.
    num_programs: int | None = None


@dataclass
class ClevrRefMeta(TaskMeta):
    """TaskMeta plus the program vocabulary (IEP's program_token_to_idx) and the longest training
    program's length with <START> and <END> (a program generator's decoding length)."""

    program_vocab: dict[str, int] = field(default_factory=dict)
    program_length: int = 0


def scenes_file(root: Path, split: str) -> Path:
    return root / "scenes" / f"clevr_ref+_{split}_scenes.json"


def refexps_file(root: Path, split: str) -> Path:
    return root / "refexps" / f"clevr_ref+_{split}_refexps.json"


def features_file(root: Path, split: str) -> Path:
    return root / "features" / f"{split}_features.h5"


@TASKS.register("clevr_ref")
class ClevrRefTask(Task):
    Config = ClevrRefConfig
    name = "clevr_ref"
    primary_metric = "cumulative_iou"

    def __init__(self, config: ClevrRefConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_max_images()
        if not self.config.positive_weight > 0:
            raise UserError(f"task.positive_weight={self.config.positive_weight}: must be > 0")
        if self.config.num_programs is not None and self.config.num_programs < 0:
            raise UserError(f"task.num_programs={self.config.num_programs}: must be >= 0 (or null for every one)")
        self.scenes: dict[str, list[ClevrScene]] = {}
        self.refexps: dict[str, dict[int, Refexp]] = {}  # split -> refexp index -> expression
        self.family_names: dict[int, str] = {}
        self.grid: tuple[int, int] | None = None  # (rows, cols) of the feature map, the same for every split

    def data_dir(self) -> tuple[Path, bool]:
        def make_config(**fields: Any) -> Any:  # the generator is imported only when it is needed
            from nas.synth import SynthClevrRefConfig

            return SynthClevrRefConfig(**fields)

        def generate(path: Path, config: Any, progress: bool) -> Any:
            from nas.synth import generate_clevr_ref

            return generate_clevr_ref(path, config, progress)

        return self.resolve_data_dir("refexps", SYNTH_SIZES, make_config, generate)

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        if any("+" in split for split in splits):
            raise UserError("task.*_split: the clevr_ref task does not join splits with '+'")
        for split in splits:
            if split not in SPLITS:
                raise UserError(f"unknown CLEVR-Ref+ split '{split}'. Valid splits: {', '.join(SPLITS)}")
        meta_path = root / "synth_meta.json"
        if meta_path.is_file():
            self.family_names = dict(enumerate(read_json(meta_path).get("families", [])))
        names = list(dict.fromkeys(["train", *splits]))
        for name in names:
            self.scenes[name] = read_scenes(scenes_file(root, name))
            loaded = read_refexps(refexps_file(root, name), [len(s.objects) for s in self.scenes[name]])
            self.refexps[name] = {r.index: r for r in loaded}
        tokenizer = Tokenizer()
        tokens = {name: tokenizer(r.refexp for r in self.refexps[name].values()) for name in names}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for ts in tokens.values() for t in ts))
        programs = program_vocab(r.program for r in self.refexps["train"].values())
        lengths = {name: max((len(to_prefix_tokens(r.program)) for r in self.refexps[name].values()), default=0)
                   for name in names}
        width = 2 + max(lengths.values())  # every loaded program fits: <START> + tokens + <END>
        datasets: dict[str, Dataset] = {}
        shapes = set()
        for name in dict.fromkeys(splits):
            items = list(self.refexps[name].values())
            keep = first_images((r.image_index for r in items), self.config.max_images)
            chosen = [i for i, r in enumerate(items) if keep is None or r.image_index in keep]
            if len(chosen) < len(items):
                self.truncated.add(name)
            features = read_grid_features(features_file(root, name), len(self.scenes[name]))
            shapes.add(features.shape[1:])
            coverage = object_coverage(self.scenes[name], features.shape[2], features.shape[3],
                                       {items[i].image_index for i in chosen})
            known = np.ones(len(chosen), bool)
            if name == self.config.train_split and self.config.num_programs is not None:
                known[self.config.num_programs:] = False
            datasets[name] = ClevrRefDataset(name, [items[i] for i in chosen],
                                             encode([tokens[name][i] for i in chosen], vocab, self.config.max_tokens),
                                             features, coverage,
                                             encode_programs([items[i].program for i in chosen], programs, width),
                                             known)
        if len(shapes) > 1:
            raise UserError(f"{root / 'features'}: the splits' grid features differ in shape (C, H, W): "
                            f"{sorted(shapes)}")
        channels, rows, cols = shapes.pop()
        self.grid = (rows, cols)
        meta = ClevrRefMeta(vocab_size=len(vocab), feature_dim=channels, num_outputs=1,
                            word_vectors=word_vector_tensor(self.config.word_vectors, vocab), program_vocab=programs,
                            program_length=2 + lengths["train"])
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    # ---------------------------------------------------------------- model
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return GridMaskHead(hidden, self.config.flat_mlp, self.config.dropout)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # outputs: (B, N) cell logits; per expression the mean over cells, summed over the batch
        weight = torch.tensor(self.config.positive_weight, device=outputs.device)
        return F.binary_cross_entropy_with_logits(outputs, batch["target"], pos_weight=weight,
                                                  reduction="none").mean(1).sum()

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        rows = outputs.shape[0]
        grid_rows, grid_cols = self.grid
        logits = outputs.reshape(rows, 1, grid_rows, grid_cols)
        masks = (F.interpolate(logits, size=(MASK_HEIGHT, MASK_WIDTH), mode="bilinear", align_corners=False)
                 > 0).squeeze(1).cpu().numpy()  # (B, 320, 480)
        return [{"refexp_index": int(r), "image_index": int(i), "mask_rle": encode_rle(m), "box": mask_box(m)}
                for r, i, m in zip(batch["refexp"].tolist(), batch["image_index"].tolist(), masks)]

    # --------------------------------------------------------------- metric
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        base = _base(dataset)
        wanted = [base.refexps[i] for i in _positions(dataset)]
        by_index = {p["refexp_index"]: p for p in predictions}
        return score_predictions(wanted, self.scenes[base.split], by_index, f"split '{split}'",
                                 self.family_names or None).to_dict()

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """The better of two constant masks: all foreground, and a centre box (the middle half of each side)."""
        centre = np.zeros((MASK_HEIGHT, MASK_WIDTH), bool)
        centre[MASK_HEIGHT // 4:MASK_HEIGHT - MASK_HEIGHT // 4, MASK_WIDTH // 4:MASK_WIDTH - MASK_WIDTH // 4] = True
        rules = {}
        for rule, mask in (("all foreground", np.ones((MASK_HEIGHT, MASK_WIDTH), bool)), ("centre box", centre)):
            entry = {"mask_rle": encode_rle(mask), "box": mask_box(mask)}
            base = _base(dataset)
            predictions = [{"refexp_index": base.refexps[i].index, **entry} for i in _positions(dataset)]
            rules[rule] = self.evaluate(split, dataset, predictions)
        best = max(rules, key=lambda r: rules[r][self.primary_metric])
        return {"rule": best, **rules[best], "rules": rules}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return (f"cIoU={metrics['cumulative_iou']:.2f} mIoU={metrics['mean_iou']:.2f} "
                f"Acc@0.5={metrics['accuracy']:.2f} ({metrics['num_refexps']} expressions)")

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """One {refexp_index, image_index, mask_rle, box} per expression of the split, or nothing."""
        base = _base(dataset)
        self.warn_if_subset(path, [base.split])
        return write_results(path, predictions, [base.refexps[i].index for i in _positions(dataset)])

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--refexps", help="CLEVR-Ref+ refexps JSON (clevr_ref+_{split}_refexps.json)")
        parser.add_argument("--scenes", help="CLEVR-Ref+ scenes JSON with obj_mask (clevr_ref+_{split}_scenes.json); "
                                             "with --results, a list of {refexp_index, image_index, mask_rle, box}")
        # --results is vqa's option too: nas evaluate defines it once, with both tasks' help
        parser.add_argument("--results", help="results JSON: a list of {refexp_index, image_index, mask_rle, box}")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        missing = [f"--{k}" for k in ("refexps", "scenes", "results") if getattr(args, k, None) is None]
        if missing:
            raise UserError(f"nas evaluate --task clevr_ref needs {', '.join(missing)}")
        return evaluate_results_files(args.refexps, args.scenes, args.results).to_dict()


def _base(dataset: Dataset) -> ClevrRefDataset:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def _positions(dataset: Dataset) -> list[int]:
    """Positions in the base dataset of a split's (or a Subset's) expressions."""
    return list(dataset.indices) if isinstance(dataset, Subset) else list(range(len(dataset)))
