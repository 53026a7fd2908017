"""Batch-level data helpers: joined splits with different region counts."""

import torch

from nas.data import BatchConcat


class Regions:
    """A part whose images all have ``regions`` regions, each feature equal to that count."""

    def __init__(self, regions: int, size: int) -> None:
        self.regions, self.size = regions, size

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices):
        n = len(indices)
        return {"features": torch.full((n, self.regions, 2), float(self.regions)),
                "positive": torch.ones(n, self.regions, dtype=torch.bool),
                "num_regions": torch.full((n,), self.regions), "index": torch.tensor(indices)}


def test_joined_parts_with_different_region_counts_pad_to_the_widest() -> None:
    joined = BatchConcat([Regions(3, 2), Regions(5, 2)])
    batch = joined.__getitems__([3, 0, 2])
    assert batch["features"].shape == (3, 5, 2) and batch["positive"].dtype == torch.bool
    assert batch["index"].tolist() == [1, 0, 0]  # each part's own index, in the requested order
    assert batch["num_regions"].tolist() == [5, 3, 5]
    assert batch["features"][1, :, 0].tolist() == [3, 3, 3, 0, 0]
    assert batch["positive"][1].tolist() == [True, True, True, False, False]
