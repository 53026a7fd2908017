"""Length grouping (``train.group_by_length``) and the padding it saves: same samples, same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import GROUP_BATCHES, GlobalBatchSampler, make_loader
from nas.distributed import World
from nas.heads import FusionHead
from nas.space import fixed_block_factory
from nas.task import TaskMeta
from search_spaces.mmnas import MmnasConfig, MmnasSpace

# A realistic spread of detector boxes per image (bottom-up attention keeps 10 to 100).
LENGTHS = np.random.default_rng(0).integers(10, 101, size=1000)


def widths(batches: list[np.ndarray]) -> list[int]:
    return [int(LENGTHS[batch].max()) for batch in batches]


def test_grouped_batches_hold_every_sample_once_and_are_narrower() -> None:
    plain = GlobalBatchSampler(len(LENGTHS), 16, True, seed=3)
    grouped = GlobalBatchSampler(len(LENGTHS), 16, True, seed=3, lengths=LENGTHS)
    assert sorted(np.concatenate(grouped.batches).tolist()) == list(range(len(LENGTHS)))
    assert [len(b) for b in grouped.batches] == [len(b) for b in plain.batches]  # full batches, short one last
    # Padded work: sum over batches of batch size x widest sample.
    padded_plain = sum(len(b) * w for b, w in zip(plain.batches, widths(plain.batches)))
    padded_grouped = sum(len(b) * w for b, w in zip(grouped.batches, widths(grouped.batches)))
    assert padded_grouped < 0.7 * padded_plain
    assert padded_grouped < 1.1 * LENGTHS.sum()  # almost no padding is left
    # The batch order is shuffled, not sorted from long to short.
    assert widths(grouped.batches) != sorted(widths(grouped.batches), reverse=True)


def test_grouping_is_a_function_of_the_seed_and_resumes_and_splits_like_the_plain_sampler() -> None:
    first = GlobalBatchSampler(len(LENGTHS), 8, True, seed=5, lengths=LENGTHS)
    again = GlobalBatchSampler(len(LENGTHS), 8, True, seed=5, lengths=LENGTHS)
    other = GlobalBatchSampler(len(LENGTHS), 8, True, seed=6, lengths=LENGTHS)
    assert all(np.array_equal(a, b) for a, b in zip(first.batches, again.batches))
    assert any(not np.array_equal(a, b) for a, b in zip(first.batches, other.batches))
    resumed = GlobalBatchSampler(len(LENGTHS), 8, True, seed=5, lengths=LENGTHS, start_step=7)
    assert list(resumed) == list(first)[7:]
    # Two ranks with batch 4 see, between them, the global batches of one process with batch 8.
    ranks = [GlobalBatchSampler(len(LENGTHS), 4, True, seed=5, world=World(rank, 2, rank), lengths=LENGTHS)
             for rank in range(2)]
    for step, batch in enumerate(first):
        assert list(ranks[0])[step] + list(ranks[1])[step] == batch
    # Windows of GROUP_BATCHES global batches are sorted, so a sample never leaves its window.
    window = 8 * GROUP_BATCHES
    order = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(5)).numpy()
    first_window = set(order[:window].tolist())
    assert sum(set(b.tolist()) <= first_window for b in first.batches) == window // 8


def test_without_shuffle_or_lengths_the_order_is_unchanged() -> None:
    assert [b.tolist() for b in GlobalBatchSampler(10, 4, False, seed=0, lengths=LENGTHS[:10]).batches] == \
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    space = MmnasSpace(MmnasConfig(hidden=32, head_dim=16, relation_dim=8, enc_blocks=2, dec_blocks=3, dropout=0.0))
    choices = {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "rel_self_att", "dec/1": "guided_att",
               "dec/2": "feed_forward"}
    meta = TaskMeta(vocab_size=20, feature_dim=12, num_outputs=7)
    return space.build_model(meta, FusionHead(32, 64, 7), fixed_block_factory(choices)).eval()


def region_batch(counts: list[int], width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Samples with ``counts`` real regions, zero-padded to ``width`` (what a grouped batch trims away)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.zeros(len(counts), width, 12)
    boxes = torch.zeros(len(counts), width, 4)
    for row, count in enumerate(counts):
        features[row, :count] = torch.randn(count, 12, generator=generator)
        corner = torch.rand(count, 2, generator=generator) * 50
        boxes[row, :count] = torch.cat([corner, corner + 1 + torch.rand(count, 2, generator=generator) * 40], 1)
    tokens = torch.randint(1, 20, (len(counts), 6), generator=generator)
    tokens[:, 4:] = 0
    return {"tokens": tokens, "features": features, "boxes": boxes, "num_regions": torch.tensor(counts),
            "image_size": torch.tensor([[100, 100]] * len(counts))}


def test_padding_to_100_regions_or_to_the_batchs_widest_gives_the_same_outputs(model: torch.nn.Module) -> None:
    counts = [13, 57, 31]
    narrow, padded = region_batch(counts, max(counts)), region_batch(counts, 100)
    with torch.no_grad():
        assert torch.allclose(model(narrow), model(padded), atol=1e-5)
        # ... and the same as each sample alone at its own width (what grouping changes: the neighbours).
        alone = torch.cat([model({k: v[i:i + 1, :counts[i]] if k in ("features", "boxes") else v[i:i + 1]
                                  for k, v in narrow.items()}) for i in range(len(counts))])
        assert torch.allclose(model(narrow), alone, atol=1e-5)


def test_the_vqa_dataset_reports_region_counts_for_grouping(tiny_vqa_dir, tmp_path) -> None:
    import tasks  # noqa: F401
    from nas.registry import TASKS

    task_cls = TASKS.get("vqa")
    task = task_cls(task_cls.Config(data_dir=str(tiny_vqa_dir)), tmp_path, False)
    train = task.prepare(["train"]).splits["train"]
    lengths = train.lengths()
    assert len(lengths) == len(train) and lengths.min() >= 1
    batch = train.__getitems__(list(range(8)))
    assert batch["num_regions"].tolist() == lengths[:8].tolist()
    loader = make_loader(train, 8, True, seed=1, group_by_length=True)
    seen = [i for b in loader.batch_sampler for i in b]
    assert sorted(seen) == list(range(len(train)))
