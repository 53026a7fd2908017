"""Batch-level datasets and loaders shared by every task.

Task datasets implement ``__getitems__(indices) -> dict of batched tensors`` so
a batch is gathered with one fancy-indexing call per array instead of one
Python call per sample.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from nas.distributed import SINGLE, World

__all__ = ["batch_collate", "make_loader", "make_eval_loader", "GlobalBatchSampler", "contiguous_split",
           "BatchConcat", "move_batch", "sample_lengths", "count_samples", "GROUP_BATCHES"]


def batch_collate(batch: Any) -> Any:
    """``__getitems__`` already returns a batch; keep it as it is."""
    return batch


GROUP_BATCHES = 50  # length grouping sorts windows of this many global batches (fairseq / HF's megabatches)


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's slice of each global batch of ``batch_size * world.size`` samples.

    Every rank draws the same permutation from ``seed``, so N ranks with batch b see, step for
    step, the samples one process sees with batch N*b. ``start_step`` skips the batches an
    interrupted epoch already trained on. A last global batch smaller than the world is dropped,
    so no rank is ever handed an empty batch.

    With ``lengths`` (e.g. each sample's region count), samples of similar length share a batch:
    each window of ``GROUP_BATCHES`` global batches of the permutation is sorted by length and cut
    into batches, and the batches are then shuffled. A batch is only as wide as its longest sample,
    so on features with 10 to 100 boxes this cuts the padded work; the order stays a function of
    ``seed`` alone, so resuming and several ranks work as without it.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int, world: World = SINGLE,
                 start_step: int = 0, drop_last: bool = False, lengths: np.ndarray | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(length, generator=generator).numpy() if shuffle else np.arange(length)
        step = batch_size * world.size
        if lengths is not None and shuffle:
            batches = _grouped_batches(order, np.asarray(lengths), step, generator)
        else:
            batches = [order[i:i + step] for i in range(0, length, step)]
        if batches and (len(batches[-1]) < world.size or (drop_last and len(batches[-1]) < step)):
            batches.pop()
        self.batches = batches[start_step:]
        self.world = world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield np.array_split(batch, self.world.size)[self.world.rank].tolist()

    def __len__(self) -> int:
        return len(self.batches)


def _grouped_batches(order: np.ndarray, lengths: np.ndarray, step: int, generator: torch.Generator
                     ) -> list[np.ndarray]:
    """Batches of similar-length samples in shuffled order; the short last batch stays last (so
    ``drop_last`` and the empty-rank rule treat it as without grouping)."""
    batches: list[np.ndarray] = []
    window = step * GROUP_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + step] for i in range(0, len(chunk), step)]
    last = batches.pop() if batches and len(batches[-1]) < step else None
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches + ([last] if last is not None else [])


def sample_lengths(dataset: Dataset) -> np.ndarray | None:
    """Each sample's length for grouping (its region count), or None when the dataset has none."""
    lengths = getattr(dataset, "lengths", None)
    return lengths() if callable(lengths) else None


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False, world: World = SINGLE, start_step: int = 0,
                group_by_length: bool = False) -> DataLoader:
    """Training batches: this rank's part of each global batch, from ``start_step`` on (with
    ``group_by_length``, batches of samples with similar region counts where the dataset has them)."""
    lengths = sample_lengths(dataset) if group_by_length else None
    sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle, seed, world, start_step, drop_last, lengths)
    # A loader of its own generator: starting an iterator otherwise draws a worker seed from the global
    # stream, which would shift the dropout draws of a resumed epoch.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=batch_collate,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))


def make_eval_loader(dataset: Dataset, batch_size: int, world: World = SINGLE) -> DataLoader:
    """This rank's contiguous share of ``dataset`` in order; rank-ordered concatenation restores it."""
    share = np.array_split(np.arange(len(dataset)), world.size)[world.rank]
    batches = [share[i:i + batch_size].tolist() for i in range(0, len(share), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=batch_collate, generator=torch.Generator())


class _BatchSubset(Subset):
    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.dataset.__getitems__([self.indices[i] for i in indices])

    def lengths(self) -> np.ndarray | None:
        whole = sample_lengths(self.dataset)
        return None if whole is None else whole[np.asarray(self.indices, np.int64)]


def contiguous_split(dataset: Dataset, portion: float) -> tuple[Dataset, Dataset]:
    """First ``portion`` of the samples, and the rest, in index order (MmNas's 80/20 split)."""
    cut = int(len(dataset) * portion)
    if cut == 0 or cut == len(dataset):
        raise ValueError(f"a split at {portion} of {len(dataset)} samples leaves one part empty")
    return _BatchSubset(dataset, range(cut)), _BatchSubset(dataset, range(cut, len(dataset)))


class BatchConcat(Dataset):
    """Concatenation of batch-level datasets (``train+val``)."""

    def __init__(self, parts: list[Dataset]) -> None:
        self.parts = parts
        self.offsets = [0]
        for part in parts:
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def lengths(self) -> np.ndarray | None:
        parts = [sample_lengths(part) for part in self.parts]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        pieces = []
        for number, part in enumerate(self.parts):
            start, stop = self.offsets[number], self.offsets[number + 1]
            local = [i - start for i in indices if start <= i < stop]
            if local:
                pieces.append((part.__getitems__(local), [i for i in indices if start <= i < stop]))
        order = {index: position for position, index in enumerate(indices)}
        merged = {key: _cat_padded([batch[key] for batch, _ in pieces]) for key in pieces[0][0]}
        positions = torch.tensor([order[i] for _, idx in pieces for i in idx])
        inverse = torch.empty_like(positions)
        inverse[positions] = torch.arange(len(positions))
        return {key: value[inverse] for key, value in merged.items()}


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch; parts with fewer regions (or tokens) are zero-padded to the widest,
    as a single dataset pads its own batches (``num_regions`` says which rows are real)."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for tensor in tensors:
        if list(tensor.shape[1:]) != shape:
            grown = tensor.new_zeros((tensor.shape[0], *shape))
            grown[(slice(None), *(slice(0, n) for n in tensor.shape[1:]))] = tensor
            tensor = grown
        padded.append(tensor)
    return torch.cat(padded)


def count_samples(batch: dict[str, torch.Tensor]) -> int:
    """Samples in a batch: its rows, except in a batch whose samples take several rows (NLVR2: one
    row per image of a pair), which carries ``example``, one entry per sample."""
    return len(batch["example"]) if "example" in batch else len(batch["tokens"])


def move_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
