"""All-pairs evaluation encodes each caption once and scores exactly what per-pair encoding scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.data import make_eval_loader
from nas.features import RegionFeatures
from nas.space import fixed_block_factory
from nas.task import TaskMeta
from nas.text_cache import TextCache, caching_text
from search_spaces.mmnas import MmnasConfig, MmnasSpace
from tasks.itm.dataset import AllPairsDataset, PairBatcher
from tasks.itm.head import MatchingHead

CHOICES = {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "rel_self_att", "dec/1": "guided_att",
           "dec/2": "feed_forward"}


def tiny_pairs(images: int = 6, regions: int = 5, dim: int = 12) -> AllPairsDataset:
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 100, (images, regions, 2)).astype(np.float32)
    features = RegionFeatures(features=rng.standard_normal((images, regions, dim), dtype=np.float32),
                              boxes=np.concatenate([corner, corner + 20], 2), num_regions=np.full(images, regions),
                              image_size=np.tile([200, 300], (images, 1)), image_ids=np.arange(images),
                              directory=Path("synthetic"))
    tokens = rng.integers(1, 50, (5 * images, 7))
    tokens[::3, 5:] = 0  # some padded captions
    return AllPairsDataset(PairBatcher(tokens, features), np.arange(images))


def tiny_model(dropout: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    space = MmnasSpace(MmnasConfig(hidden=16, head_dim=8, enc_blocks=2, dec_blocks=3, dropout=dropout))
    meta = TaskMeta(vocab_size=50, feature_dim=12, num_outputs=1)
    return space.build_model(meta, MatchingHead(16, 32, dropout=dropout, fusion="product"),
                             fixed_block_factory(CHOICES)).eval()


def test_cached_text_scores_equal_per_pair_scores_and_each_caption_is_encoded_once() -> None:
    pairs, model = tiny_pairs(), tiny_model()
    loader = make_eval_loader(pairs, 37)  # batches cut across images, so captions recur across batches
    with torch.no_grad():
        plain = torch.cat([model(batch) for batch in loader])
        encoded_rows = []
        original = model.embedding.embed_text
        model.embedding.embed_text = lambda tokens: (encoded_rows.append(len(tokens)), original(tokens))[1]
        with caching_text(model):
            cached = torch.cat([model(batch) for batch in loader])
        model.embedding.embed_text = original
    assert len(pairs) == 6 * 30
    assert sum(encoded_rows) == 30  # the 30 captions, once each, out of 180 pairs
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert model.text_cache is None  # the cache lives for one evaluation only


def test_training_mode_and_batches_without_text_index_do_not_use_the_cache() -> None:
    pairs, model = tiny_pairs(), tiny_model()
    batch = pairs.__getitems__(list(range(10)))
    calls = []
    original = model.embedding.embed_text
    model.embedding.embed_text = lambda tokens: (calls.append(1), original(tokens))[1]
    with torch.no_grad(), caching_text(model):
        model.train()
        model(batch)
        model.eval()
        model({k: v for k, v in batch.items() if k != "text_index"})
    assert calls == [1, 1]  # the ordinary path, which embeds text in the same call for every pair


def test_a_new_padded_length_starts_the_cache_over() -> None:
    cache = TextCache()
    encoded = []

    def encode(tokens: torch.Tensor):
        encoded.append(tokens.shape)
        return tokens.float().unsqueeze(-1).repeat(1, 1, 2), tokens != 0

    tokens = torch.tensor([[1, 2, 0], [3, 4, 5]])
    rows, keep = cache.lookup(torch.tensor([4, 1]), tokens, encode)
    rows2, _ = cache.lookup(torch.tensor([1, 4, 4]), tokens[[1, 0, 0]], encode)
    assert encoded == [(2, 3)] and torch.equal(rows2, rows[[1, 0, 0]])
    rows3, _ = cache.lookup(torch.tensor([7, 1]), torch.tensor([[9, 9], [3, 4]]), encode)
    assert encoded == [(2, 3), (2, 2)] and torch.equal(rows3[:, :, 0], torch.tensor([[9.0, 9.0], [3.0, 4.0]]))
