"""Image-text matching (retrieval) with a cross-encoder, on SCAN's precomputed layout.

Data layout under ``task.data_dir``: ``<dataset>_precomp/{train,dev,test}_{ims.npy,caps.txt,ids.txt}``
(see ``tasks.itm.precomp``). Training pairs each caption with its image and with
one negative caption and one negative image, random for the first
``hard_negative_start_epoch`` epochs and then mined with the current model
(MmNas). Evaluation scores every image-caption pair of a split and reports
SCAN's R@1/5/10, median and mean rank, and rsum.
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
from nas.limits import check_free_memory
from nas.io import atomic_write
from nas.registry import TASKS
from nas.task import Task, TaskData, TaskMeta
from nas.text import Tokenizer, encode, load_or_build_vocab, word_vector_tensor
from tasks.itm.dataset import AllPairsDataset, MatchingDataset, PairBatcher
from tasks.itm.head import MatchingHead
from tasks.itm.metric import coco_1k_scores, evaluate_itm_file, retrieval_scores
from tasks.itm.mining import mine_hard_negatives
from tasks.itm.precomp import CAPTIONS_PER_IMAGE, read_precomp

__all__ = ["ItmTask", "ItmConfig", "SYNTH_SIZES"]

PAIR_BYTES = 4 + 8 + 8 + 4  # a prediction's score, row and column, and its cell of the similarity matrix
SYNTH_SIZES = {
    "tiny": {"train_images": 40, "dev_images": 10, "test_images": 10, "regions": 16, "max_objects": 4,
             "feature_dim": 32},
    "small": {"train_images": 500, "dev_images": 50, "test_images": 50, "feature_dim": 128},
    "default": {},
}


@dataclass
class ItmConfig:
    name: str = "itm"
    data_dir: str | None = None  # None = the built-in generated dataset
    cache_dir: str | None = None
    dataset: str = "f30k"  # reads <data_dir>/<dataset>_precomp/
    train_split: str = "train"
    eval_split: str = "dev"
    test_split: str = "test"
    loss: str = "bce"  # bce: positive 1, negatives 0 (MmNas); hinge: margin against the sampled negatives
    margin: float = 0.2
    # sum: MmNas's head (pooled text + pooled image); product: adds their element-wise product, which
    # learns in minutes on CPU where sum stays at chance for many epochs (benchmarks/README.md).
    fusion: str = "product"
    hard_negative_start_epoch: int = 10  # random negatives before this epoch (MmNas NEG_START_EPOCH)
    hard_negative_pool: int = 64  # random candidates scored per image and per caption
    hard_negative_topk: int = 5  # negatives are drawn from the best-scoring ones
    eval_protocol: str = "all"  # all: one ranking over the split; coco1k: mean over 5 folds of 1000 images
    max_tokens: int = 50
    word_vectors: str | None = None
    flat_mlp: int = 512
    dropout: float = 0.1  # in the head's AttFlat MLPs (MmNas 0.1); space.dropout covers the blocks
    synth_size: str = "default"
    synth_seed: int = 0
    # Keep only each split's first N images in file order (the rows of {split}_ims.npy) and
    # their five captions each; the other rows are never read. The vocabulary still counts
    # every caption, so the model has the shape of a full run. --tiny: 512, --fast: 4096.
    max_images: int | None = None


@TASKS.register("itm")
class ItmTask(Task):
    Config = ItmConfig
    name = "itm"
    primary_metric = "rsum"

    def __init__(self, config: ItmConfig, run_dir: Path, progress: bool = True) -> None:
        super().__init__(config, run_dir, progress)
        self.check_options({"loss": ("bce", "hinge"), "fusion": ("sum", "product"),
                            "eval_protocol": ("all", "coco1k")})
        self.check_max_images()
        self.training_sets: list[MatchingDataset] = []
        self.eval_batch_size = 256

    def data_dir(self) -> tuple[Path, bool]:
        from nas.synth import SynthScanConfig, generate_scan

        return self.resolve_data_dir(f"{self.config.dataset}_precomp", SYNTH_SIZES, SynthScanConfig, generate_scan)

    def prepare(self, splits: list[str]) -> TaskData:
        root, builtin = self.data_dir()
        folder = root / f"{self.config.dataset}_precomp"
        if any("+" in split for split in splits):
            raise UserError("task.*_split: the itm task does not join splits with '+'")
        present = [s for s in ("train", "dev", "test", "testall") if (folder / f"{s}_caps.txt").is_file()]
        loaded = {name: read_precomp(folder, name) for name in dict.fromkeys(splits + present)}
        tokenizer = Tokenizer()
        tokens = {name: tokenizer(split.captions) for name, split in loaded.items()}
        vocab = load_or_build_vocab(self.run_dir / "vocab.json", (t for n in present for t in tokens[n]))
        datasets: dict[str, Dataset] = {}
        for offset, name in enumerate(dict.fromkeys(splits)):
            split = loaded[name].head(self.config.max_images)
            if split.num_images < loaded[name].num_images:
                self.truncated.add(name)
            pairs = PairBatcher(encode(tokens[name][:len(split.captions)], vocab, self.config.max_tokens),
                                split.features)
            datasets[name] = MatchingDataset(name, pairs, seed=offset)
        self.training_sets = [datasets[splits[0]]]
        vectors = word_vector_tensor(self.config.word_vectors, vocab)
        meta = TaskMeta(vocab_size=len(vocab), feature_dim=loaded[splits[0]].features.feature_dim, num_outputs=1,
                        word_vectors=vectors)
        return TaskData(splits=datasets, meta=meta, info={"data_dir": str(root), "builtin": builtin})

    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        return MatchingHead(hidden, self.config.flat_mlp, self.config.dropout, fusion=self.config.fusion)

    def begin_epoch(self, model: nn.Module, epoch: int, device: torch.device) -> None:
        for dataset in self.training_sets:
            dataset.reseed(1000 + epoch)
            if epoch < self.config.hard_negative_start_epoch:
                dataset.set_hard_negatives(None, None)
                continue
            captions, images = mine_hard_negatives(model, dataset.pairs, self.config.hard_negative_pool,
                                                   self.config.hard_negative_topk, dataset.rng, device,
                                                   self.eval_batch_size, self.progress)
            dataset.set_hard_negatives(captions, images)

    def state_dict(self) -> dict[str, Any]:
        """Each training set's negative sampler: its random stream and the mined candidates."""
        return {"sets": [{"rng": _rng_state(d.rng), "hard_captions": _tensor(d.hard_captions),
                          "hard_images": _tensor(d.hard_images)} for d in self.training_sets]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for dataset, saved in zip(self.training_sets, state.get("sets", [])):
            dataset.rng.bit_generator.state = _rng_from_state(saved["rng"])
            dataset.set_hard_negatives(*(None if saved[k] is None else saved[k].cpu().numpy()
                                         for k in ("hard_captions", "hard_images")))

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(outputs, batch["label"], reduction="sum")
        positive, negative_caption, negative_image = torch.sigmoid(outputs).chunk(3)
        return (F.relu(self.config.margin - positive + negative_caption)
                + F.relu(self.config.margin - positive + negative_image)).sum()

    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"row": batch["row"].cpu().numpy(), "column": batch["column"].cpu().numpy(),
                 "score": outputs.float().cpu().numpy()}]

    def evaluation_view(self, dataset: Dataset) -> Dataset:
        if isinstance(dataset, MatchingDataset):
            view = AllPairsDataset(dataset.pairs, np.arange(dataset.pairs.num_images))
        elif isinstance(dataset, Subset) and isinstance(dataset.dataset, MatchingDataset):
            images = np.unique(np.asarray(dataset.indices) // CAPTIONS_PER_IMAGE)
            view = AllPairsDataset(dataset.dataset.pairs, images)
        else:
            raise UserError(f"cannot rank {type(dataset).__name__}: evaluate itm on a single split")
        # Every pair's score, row and column are kept, then the similarity matrix is filled.
        check_free_memory(len(view) * PAIR_BYTES, f"ranking {len(view.images):,} images against "
                          f"{len(view.captions):,} captions ({len(view):,} pairs)",
                          "evaluate fewer images (task.max_images or --tiny), or on a machine with more memory")
        return view

    def _matrix(self, dataset: Dataset, predictions: list[dict[str, Any]]) -> np.ndarray:
        view = self.evaluation_view(dataset)
        sims = np.full((len(view.images), len(view.captions)), np.nan, np.float32)
        for part in predictions:
            sims[part["row"], part["column"]] = part["score"]
        return sims

    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        sims = self._matrix(dataset, predictions)
        scores = coco_1k_scores(sims) if self.config.eval_protocol == "coco1k" else retrieval_scores(sims)
        return scores.to_dict()

    def baseline(self, train: Dataset, split: str, dataset: Dataset) -> dict[str, Any]:
        """Recall of random scores (chance), with a fixed seed."""
        view = self.evaluation_view(dataset)
        sims = np.random.default_rng(0).random((len(view.images), len(view.captions))).astype(np.float32)
        return {**retrieval_scores(sims).to_dict(), "rule": "random scores"}

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return (f"rsum={metrics['rsum']:.1f} i2t R@1/5/10={metrics['i2t_r1']:.1f}/{metrics['i2t_r5']:.1f}/"
                f"{metrics['i2t_r10']:.1f} t2i R@1/5/10={metrics['t2i_r1']:.1f}/{metrics['t2i_r5']:.1f}/"
                f"{metrics['t2i_r10']:.1f}")

    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """The split's (images x captions) similarity matrix, as ``.npy``, every pair scored."""
        target = Path(path).with_suffix(".npy")
        sims = self._matrix(dataset, predictions)
        unscored = int(np.isnan(sims).sum())
        if unscored:
            raise UserError(f"{target}: refusing to write an incomplete submission: {unscored} of {sims.size} "
                            "image-caption pairs have no score")
        self.warn_if_subset(target, [_split_name(dataset)])
        return atomic_write(target, lambda tmp: np.save(tmp.open("wb"), sims))

    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        parser.add_argument("--sims", help="similarity matrix .npy (images x 5*images), e.g. from nas retrain")
        parser.add_argument("--protocol", default="all", choices=["all", "coco1k"],
                            help="all: one ranking; coco1k: mean over 5 folds of 1000 images")

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        if getattr(args, "sims", None) is None:
            raise UserError("nas evaluate --task itm needs --sims")
        return evaluate_itm_file(args.sims, protocol=args.protocol).to_dict()


def _split_name(dataset: Dataset) -> str:
    return dataset.split if isinstance(dataset, MatchingDataset) else _split_name(dataset.dataset)  # or a Subset


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.ascontiguousarray(array))


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's 128-bit integers are kept as strings: checkpoints hold plain values only.
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": str(state["state"]["state"]),
            "inc": str(state["state"]["inc"]), "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}


def _rng_from_state(saved: dict[str, Any]) -> dict[str, Any]:
    return {"bit_generator": saved["bit_generator"], "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
            "has_uint32": saved["has_uint32"], "uinteger": saved["uinteger"]}
