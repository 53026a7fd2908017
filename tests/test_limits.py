"""Work that would not fit in memory is refused before it starts, with the estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.features import RegionFeatures
from nas.limits import available_memory, check_free_memory, format_size
from tasks.itm.dataset import MatchingDataset, PairBatcher


def test_available_memory_is_read_from_the_kernel() -> None:
    free = available_memory()
    assert free is None or 0 < free < 2**50


def test_sizes_are_shown_in_readable_units() -> None:
    assert [format_size(n) for n in (672, 2048, 5 * 2**20, 3 * 2**30)] == ["672 bytes", "2.0 KiB", "5.0 MiB",
                                                                         "3.0 GiB"]


def test_an_all_pairs_ranking_too_big_for_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks  # noqa: F401
    from nas.registry import TASKS

    images = 40
    features = RegionFeatures(features=np.zeros((images, 2, 4), np.float32), boxes=np.zeros((images, 2, 4), np.float32),
                              num_regions=np.full(images, 2), image_size=np.ones((images, 2), np.int64),
                              image_ids=np.arange(images), directory=Path("none"))
    dataset = MatchingDataset("test", PairBatcher(np.ones((5 * images, 3), np.int64), features), seed=0)
    task_cls = TASKS.get("itm")
    task = task_cls(task_cls.Config(), Path("unused"), False)
    pairs = images * 5 * images
    monkeypatch.setattr("nas.limits.available_memory", lambda: pairs * 24)  # enough, with no 5% margin left
    with pytest.raises(UserError, match=f"ranking 40 images against 200 captions \\({pairs:,} pairs\\) needs about "
                                        f"{format_size(pairs * 24)} of memory but only {format_size(pairs * 24)}"):
        task.evaluation_view(dataset)
    monkeypatch.setattr("nas.limits.available_memory", lambda: pairs * 48)
    assert len(task.evaluation_view(dataset)) == pairs
    monkeypatch.setattr("nas.limits.available_memory", lambda: None)  # unknown: not checked
    check_free_memory(2**60, "anything", "")
