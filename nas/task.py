"""The task protocol: data, head, loss, prediction and the official metric.

The shared search and retrain loops only talk to a task through this class, so
a new task is a new folder under ``tasks/`` and no loop changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from nas.errors import UserError
from nas.features import default_cache_dir

__all__ = ["Task", "TaskMeta", "TaskData", "check_complete", "first_images"]

log = logging.getLogger(__name__)


@dataclass
class TaskMeta:
    """Sizes the data determines, handed to the model builders as arguments."""

    vocab_size: int
    feature_dim: int
    num_outputs: int
    word_vectors: torch.Tensor | None = None


@dataclass
class TaskData:
    splits: dict[str, Dataset]
    meta: TaskMeta
    info: dict[str, Any] = field(default_factory=dict)  # e.g. where a built-in dataset was generated


class Task(ABC):
    """Base class of registered tasks.

    Args:
        config: the task's own Config dataclass.
        run_dir: where the run keeps files the task must reuse (vocabularies).
        progress: show progress bars for long data preparation.
    """

    Config: ClassVar[type]
    name: ClassVar[str]
    primary_metric: ClassVar[str]  # the key of ``evaluate`` that model selection maximises
    needs_generation: ClassVar[bool] = False  # True: only spaces with ``can_generate`` can build its model

    def __init__(self, config: Any, run_dir: Path, progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.truncated: set[str] = set()  # splits that task.max_images cut short (filled by prepare)

    def check_options(self, options: dict[str, tuple[str, ...]]) -> None:
        """Fail with a one-line error when a ``task.<key>`` string is not one of its valid values."""
        for key, valid in options.items():
            value = getattr(self.config, key)
            if value not in valid:
                raise UserError(f"task.{key}: unknown value '{value}'. Valid: {', '.join(valid)}")

    def check_max_images(self) -> None:
        """``task.max_images`` must be unset (every image) or a positive count."""
        value = getattr(self.config, "max_images", None)
        if value is not None and value < 1:
            raise UserError(f"task.max_images={value}: must be at least 1 (or null for every image)")

    def warn_if_subset(self, path: Path, splits: Iterable[str]) -> None:
        """A results file of a split that ``task.max_images`` cut short covers a subset: say so,
        as evaluation servers refuse partial submissions."""
        cut = sorted(set(splits) & self.truncated)
        if cut:
            log.warning("%s covers only the first %d images of split %s (task.max_images): "
                        "an evaluation server will not accept it", path, self.config.max_images, "+".join(cut))

    def cache_dir(self) -> Path:
        configured = getattr(self.config, "cache_dir", None)
        return Path(configured).expanduser() if configured else default_cache_dir()

    def resolve_data_dir(self, marker: str, sizes: dict[str, dict[str, Any]], make_config: Callable[..., Any],
                         generate: Callable[[Path, Any, bool], Any]) -> tuple[Path, bool]:
        """``task.data_dir`` if set (it must contain ``marker``), else the built-in dataset.

        The built-in one is generated on first use into the cache, in a folder named by
        a hash of its generator config, so every size preset and seed has its own copy.
        """
        if self.config.data_dir is not None:
            path = Path(self.config.data_dir).expanduser()
            if not (path / marker).exists():
                raise UserError(f"task.data_dir: {path} has no '{marker}' (see 'nas {self.name}' data layout "
                                "in the README)")
            return path, False
        if self.config.synth_size not in sizes:
            raise UserError(f"task.synth_size: unknown size '{self.config.synth_size}'. "
                            f"Valid sizes: {', '.join(sizes)}")
        synth = make_config(seed=self.config.synth_seed, **sizes[self.config.synth_size])
        fields = asdict(synth) if is_dataclass(synth) else dict(synth)
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        path = self.cache_dir() / "synth" / f"{self.name}-{key}"
        if not (path / "synth_meta.json").is_file():
            log.info("no task.data_dir given: generating the built-in %s dataset in %s", self.name, path)
        generate(path, synth, self.progress)
        return path, True

    def is_labelled(self, dataset: Dataset) -> bool:
        """Whether ``evaluate`` can score this dataset (test splits often have no answers)."""
        return True

    def evaluation_view(self, dataset: Dataset) -> Dataset:
        """The dataset that ``predict`` runs over to evaluate ``dataset`` (e.g. all image-caption pairs)."""
        return dataset

    def begin_epoch(self, model: nn.Module, epoch: int, device: torch.device) -> None:
        """Called by both loops before each training epoch (e.g. to mine hard negatives)."""

    def state_dict(self) -> dict[str, Any]:
        """Sampling state a mid-epoch checkpoint must keep (tensors, numbers, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``; called on resume instead of ``begin_epoch`` mid-epoch."""

    @abstractmethod
    def prepare(self, splits: list[str]) -> TaskData:
        """Load (or generate) the named splits and the vocabularies."""

    @abstractmethod
    def build_head(self, hidden: int, meta: TaskMeta) -> nn.Module:
        """The output head, called as ``head(text, text_keep, image, image_keep)``."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ...

    @abstractmethod
    def predict(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Result-file entries for a batch (e.g. ``{"question_id", "answer"}``)."""

    @abstractmethod
    def evaluate(self, split: str, dataset: Dataset, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """The official metric of ``predictions`` on ``dataset``; includes ``primary_metric``."""

    @abstractmethod
    def write_results(self, predictions: list[dict[str, Any]], path: Path, dataset: Dataset) -> Path:
        """The evaluation-server results file for ``dataset``; refuses (UserError) to write one that
        misses, repeats or adds an item, so a server never receives a partial submission."""

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        """A short one-line summary for logs."""
        return f"{self.primary_metric}={metrics[self.primary_metric]:.2f}"

    # ``nas evaluate --task NAME`` arguments and behaviour.
    @classmethod
    def add_evaluate_arguments(cls, parser: argparse._ActionsContainer) -> None:
        pass

    @classmethod
    def evaluate_files(cls, args: argparse.Namespace) -> dict[str, Any]:
        raise NotImplementedError(f"task '{cls.name}' has no file evaluation")


def first_images(image_ids: Iterable[int], max_images: int | None) -> set[int] | None:
    """The ``max_images`` smallest distinct image ids (a subset that does not depend on file
    order, so every reader of a split picks the same images); None keeps every image."""
    if max_images is None:
        return None
    return set(sorted(set(int(i) for i in image_ids))[:max_images])


def check_complete(path: Path, predicted: Sequence[Hashable], expected: Sequence[Hashable], what: str) -> None:
    """Refuse to write ``path`` unless ``predicted`` holds each of ``expected`` exactly once."""
    counts: dict[Hashable, int] = {}
    for item in predicted:
        counts[item] = counts.get(item, 0) + 1
    wanted = set(expected)
    missing = [i for i in expected if i not in counts]
    repeated = sorted(i for i, n in counts.items() if n > 1)
    extra = sorted(i for i in counts if i not in wanted)
    for problem, items in (("have no prediction", missing), ("are predicted twice", repeated),
                           ("are not in the split", extra)):
        if items:
            shown = ", ".join(str(i) for i in items[:5]) + (", ..." if len(items) > 5 else "")
            raise UserError(f"{path}: refusing to write an incomplete submission: {len(items)} of {len(wanted)} "
                            f"{what}s {problem} ({shown})")
