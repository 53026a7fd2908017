"""Batch-level datasets and loaders shared by every task.

Task datasets implement ``__getitems__(indices) -> dict of batched tensors`` so
a batch is gathered with one fancy-indexing call per array instead of one
Python call per sample.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["batch_collate", "make_loader", "contiguous_split", "BatchConcat", "move_batch"]


def batch_collate(batch: Any) -> Any:
    """``__getitems__`` already returns a batch; keep it as it is."""
    return batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=batch_collate, generator=generator, drop_last=drop_last,
                      persistent_workers=num_workers > 0)


class _BatchSubset(Subset):
    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.dataset.__getitems__([self.indices[i] for i in indices])


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

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        pieces = []
        for number, part in enumerate(self.parts):
            start, stop = self.offsets[number], self.offsets[number + 1]
            local = [i - start for i in indices if start <= i < stop]
            if local:
                pieces.append((part.__getitems__(local), [i for i in indices if start <= i < stop]))
        order = {index: position for position, index in enumerate(indices)}
        merged = {key: torch.cat([batch[key] for batch, _ in pieces]) for key in pieces[0][0]}
        positions = torch.tensor([order[i] for _, idx in pieces for i in idx])
        inverse = torch.empty_like(positions)
        inverse[positions] = torch.arange(len(positions))
        return {key: value[inverse] for key, value in merged.items()}


def move_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
