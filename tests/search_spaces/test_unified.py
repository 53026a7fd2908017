"""The unified (VLP) space: labels, the two masks, one stack for a classifier and a captioner."""

from __future__ import annotations

import pytest
import torch

from nas.errors import UserError
from nas.genotype import load_genotype
from nas.heads import FusionHead
from nas.space import fixed_block_factory
from nas.strategies.darts import DartsConfig, DartsStrategy
from nas.task import TaskMeta
from search_spaces.unified import UnifiedConfig, UnifiedSpace
from search_spaces.unified.masks import bidirectional_mask, seq2seq_mask
from tests.conftest import REPO

META = TaskMeta(vocab_size=12, feature_dim=6, num_outputs=5)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_space(layers: int = 2, **options) -> UnifiedSpace:
    return UnifiedSpace(UnifiedConfig(hidden=16, head_dim=8, ffn_mult=2, relation_dim=4, dropout=0.0,
                                      layers=layers, **options))


def inputs(batch: int = 2, regions: int = 4, words: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(batch, regions, 2, generator=generator) * 50
    return {"features": torch.randn(batch, regions, 6, generator=generator),
            "boxes": torch.cat([corner, corner + 10 + torch.rand(batch, regions, 2, generator=generator) * 20], -1),
            "num_regions": torch.tensor([regions, regions - 1][:batch]),
            "image_size": torch.tensor([[100, 120]] * batch),
            "tokens": torch.randint(5, 12, (batch, words), generator=generator)}


def test_labels_prior_depth_and_describe():
    space = tiny_space(3)
    assert list(space.choices()) == [f"layer/{i}/{slot}" for i in range(3) for slot in ("attention", "ffn")]
    assert set(space.prior().values()) == {"self_att", "feed_forward"}
    choices = {**space.prior(), "layer/1/attention": "rel_self_att", "layer/2/ffn": "identity"}
    assert space.describe(choices) == "SA+FFN, RSA+FFN, SA"
    assert UnifiedSpace.config_from_choices(choices) == {"layers": 3}
    shipped = load_genotype(REPO / "genotypes" / "vlp.json")
    assert shipped.space == "unified" and UnifiedSpace.config_from_choices(shipped.choices) == {"layers": 6}
    UnifiedSpace(UnifiedConfig(layers=6)).validate(shipped)
    with pytest.raises(UserError, match=r"space.seq2seq_probability=1.5: must be in \[0, 1\]"):
        tiny_space(seq2seq_probability=1.5)


def test_masks_by_hand():
    region_keep = torch.tensor([[True, False]])
    text_keep = torch.tensor([[True, True, False]])
    allowed = seq2seq_mask(region_keep, text_keep)[0, 0] == 0
    # rows: r0 r1 t0 t1 t2; a region reads the real regions only; text reads regions and earlier text
    assert allowed.int().tolist() == [[1, 0, 0, 0, 0],
                                      [1, 0, 0, 0, 0],
                                      [1, 0, 1, 0, 0],
                                      [1, 0, 1, 1, 0],
                                      [1, 0, 1, 1, 0]]
    both = bidirectional_mask(region_keep, text_keep)[0, 0] == 0
    assert both.int().tolist() == [[1, 0, 1, 1, 0]] * 5


@pytest.mark.parametrize("attention", ["self_att", "rel_self_att"])
def test_seq2seq_mask_hides_later_words_and_bidirectional_does_not(attention):
    space = tiny_space()
    choices = {**space.prior(), "layer/0/attention": attention}
    model = space.build_model(META, FusionHead(16, 8, 5, dropout=0.0), fixed_block_factory(choices)).eval()
    batch = inputs()
    changed = dict(batch, tokens=batch["tokens"].clone())
    changed["tokens"][:, 3] = 5 + (batch["tokens"][:, 3] - 4) % 7  # another word at position 3
    stack = model.backbone

    def run(tokens: torch.Tensor, kind) -> tuple[torch.Tensor, torch.Tensor]:
        text, text_keep, image, image_keep = model.embedding(tokens, batch["features"], batch["boxes"],
                                                             batch["num_regions"], batch["image_size"])
        return stack.run(image, text, kind(image_keep, text_keep), stack.relation(batch["boxes"]))

    with torch.no_grad():
        (text_a, image_a), (text_b, image_b) = run(batch["tokens"], seq2seq_mask), run(changed["tokens"], seq2seq_mask)
        assert torch.equal(text_a[:, :3], text_b[:, :3])  # positions before the change cannot see it
        assert not torch.allclose(text_a[:, 3:], text_b[:, 3:])
        assert torch.equal(image_a, image_b)  # regions never read the text
        (text_a, image_a), (text_b, image_b) = (run(batch["tokens"], bidirectional_mask),
                                                run(changed["tokens"], bidirectional_mask))
        assert not torch.allclose(text_a[:, 0], text_b[:, 0]) and not torch.allclose(image_a, image_b)


def test_classifier_model_matches_bidirectional_run_and_searches():
    space = tiny_space()
    model = space.build_model(META, FusionHead(16, 8, 5, dropout=0.0), fixed_block_factory(space.prior())).eval()
    batch = inputs()
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    # The padded region of sample 1 does not matter.
    moved = dict(batch, features=batch["features"].clone())
    moved["features"][1, 3] += 100.0
    with torch.no_grad():
        assert torch.allclose(model(moved)[1], logits[1], atol=1e-5)
    strategy = DartsStrategy(DartsConfig(), seed=0)
    supernet = space.build_model(META, FusionHead(16, 8, 5, dropout=0.0), strategy.make_block)
    strategy.attach(space.prior(), torch.device("cpu"))
    strategy.before_weight_step()
    supernet(batch).sum().backward()
    assert all(p.grad is not None for p in supernet.backbone.attention[0].candidates[1].parameters())
    derived = strategy.genotype()
    assert set(derived) == set(space.choices())
    assert all(derived[label] in options for label, options in space.choices().items())
