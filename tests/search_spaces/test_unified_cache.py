"""The unified captioner's key-value cache: cached steps give the full runs' log-probs and captions."""

from __future__ import annotations

import pytest
import torch

from nas.decoding import beam_search, greedy_decode, sample_decode
from nas.space import fixed_block_factory
from nas.strategies.darts import DartsConfig, DartsStrategy
from nas.task import TaskMeta
from search_spaces.unified import UnifiedConfig, UnifiedSpace
from search_spaces.unified.incremental import CachedStep, supports_cache
from tasks.caption.head import CaptionHead, DecodingSettings
from tasks.caption.vocab import SPECIAL

VOCAB = 14
META = TaskMeta(vocab_size=VOCAB, feature_dim=6, num_outputs=5)
pytestmark = pytest.mark.usefixtures("one_thread")


def captioner(choices: dict[str, str] | None = None, block_factory=None, layers: int = 3):
    space = UnifiedSpace(UnifiedConfig(hidden=16, head_dim=8, ffn_mult=2, relation_dim=4, dropout=0.0,
                                       layers=layers))
    head = CaptionHead(16, VOCAB, 0, 8, 0.0, SPECIAL, DecodingSettings(3, 0.0, 7), scst=False)
    torch.manual_seed(0)
    model = space.build_model(META, head, block_factory or fixed_block_factory({**space.prior(), **(choices or {})}))
    return model.eval()


def images(batch: int = 3, regions: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(batch, regions, 2, generator=generator) * 50
    return {"features": torch.randn(batch, regions, 6, generator=generator),
            "boxes": torch.cat([corner, corner + 10 + torch.rand(batch, regions, 2, generator=generator) * 20], -1),
            "num_regions": torch.tensor([regions, regions - 2, 1][:batch]),  # padded regions in two images
            "image_size": torch.tensor([[100, 120]] * batch)}


# Relation attention, skipped attention and a skipped feed-forward: every op the cache handles.
MIXED = {"layer/0/attention": "rel_self_att", "layer/1/attention": "identity", "layer/2/ffn": "identity"}


@pytest.mark.parametrize("choices", [{}, MIXED], ids=["vlp", "mixed-ops"])
def test_cached_steps_give_the_full_runs_log_probs_in_any_call_order(choices) -> None:
    model = captioner(choices)
    image, keep, relation = model._image(images())
    assert supports_cache(model.backbone)
    cached = model.step_function(image, keep, relation)
    full = model.step_function(image, keep, relation, cached=False)
    assert isinstance(cached, CachedStep) and not isinstance(full, CachedStep)
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(SPECIAL.first_word, VOCAB, (4, 6), generator=generator)
    tokens[:, 0] = SPECIAL.bos
    rows = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        # Extensions one token at a time (reusing the cache), with hypotheses reordered, copied and
        # dropped as beam search does, then a prefix that extends nothing (run from its start).
        calls = [(tokens[:, :1], rows), (tokens[:, :2], rows), (tokens[[3, 0, 0], :3], rows[[3, 0, 0]]),
                 (tokens[[3, 0], :4], rows[[3, 0]]), (tokens[[2, 1], :3], rows[[2, 1]]),
                 (tokens[[2], :4], rows[[2]])]
        for prefix, which in calls:
            assert torch.allclose(cached(prefix, which), full(prefix, which), atol=1e-5), prefix.shape
        assert cached._prefix.shape == (1, 4)  # the last call extended the one before it


@pytest.mark.parametrize("choices", [{}, MIXED], ids=["vlp", "mixed-ops"])
def test_cached_decoding_finds_the_same_captions(choices) -> None:
    model = captioner(choices)
    image, keep, relation = model._image(images())
    special = SPECIAL
    with torch.no_grad():
        for cached in (True, False):
            step = model.step_function(image, keep, relation, cached=cached)
            beam = beam_search(step, 3, 3, 7, special.bos, special.eos, special.pad, 0.5)
            step = model.step_function(image, keep, relation, cached=cached)
            greedy = greedy_decode(step, 3, 7, special.bos, special.eos, special.pad)
            if cached:
                cached_beam, cached_greedy = beam, greedy
    assert torch.equal(beam.tokens, cached_beam.tokens) and torch.allclose(beam.scores, cached_beam.scores, atol=1e-5)
    assert torch.equal(greedy.tokens, cached_greedy.tokens)
    assert torch.allclose(greedy.scores, cached_greedy.scores, atol=1e-5)


def test_sampling_through_the_cache_has_the_full_runs_gradient() -> None:
    model = captioner(MIXED)
    batch = images()
    grads = []
    for cached in (True, False):
        model.zero_grad()
        image, keep, relation = model._image(batch)
        step = model.step_function(image, keep, relation, cached=cached)
        drawn = sample_decode(step, 3, 7, SPECIAL.bos, SPECIAL.eos, SPECIAL.pad,
                              generator=torch.Generator().manual_seed(5))
        drawn.log_prob.sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        if cached:
            cached_tokens = drawn.tokens
    assert torch.equal(cached_tokens, drawn.tokens)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-4), name


def test_a_supernet_decodes_without_the_cache() -> None:
    strategy = DartsStrategy(DartsConfig(), seed=0)
    model = captioner(block_factory=strategy.make_block)
    image, keep, relation = model._image(images())
    assert not supports_cache(model.backbone)
    assert not isinstance(model.step_function(image, keep, relation), CachedStep)
    with pytest.raises(ValueError, match="fixed ops"):
        CachedStep(model.embedding.embed_text, model.backbone, model._word_log_probs, image, keep, relation)
