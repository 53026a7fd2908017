import math

import pytest
import torch

from nas.errors import UserError
from nas.strategies.mmnas import MmnasStrategy, MmnasStrategyConfig
from search_spaces.mmnas import MmnasConfig, MmnasSpace


class ImageSum(torch.nn.Module):
    def forward(self, text, text_keep, image, image_keep):
        return image.pow(2).sum()


def build(**overrides):
    space = MmnasSpace(MmnasConfig(hidden=16, head_dim=8, relation_dim=4, enc_blocks=2, dec_blocks=3))
    strategy = MmnasStrategy(MmnasStrategyConfig(**overrides), seed=3)
    from nas.task import TaskMeta

    model = space.build_model(TaskMeta(vocab_size=10, feature_dim=6, num_outputs=2), ImageSum(), strategy.make_block)
    strategy.attach(space.prior(), torch.device("cpu"))
    return space, strategy, model


def test_prior_init_gives_mmnas_probabilities() -> None:
    space, strategy, _ = build()
    probs = strategy.probabilities()
    # +1/-1 logits: 0.88 with two candidates, 0.71 with four (MMNAS.md, init_arch).
    assert probs["enc/0"]["self_att"] == pytest.approx(math.e / (math.e + 1 / math.e))
    assert probs["dec/0"]["rel_self_att"] == pytest.approx(math.e / (math.e + 3 / math.e))
    assert strategy.genotype() == space.prior()
    _, uniform, _ = build(alpha_init="uniform")
    assert uniform.probabilities()["dec/1"]["feed_forward"] == pytest.approx(0.25)


def test_arch_step_schedule_and_update() -> None:
    space, strategy, model = build(arch_start_epoch=2, arch_every=3)
    assert not strategy.wants_arch_step(1, 2)
    assert [strategy.wants_arch_step(2, s) for s in range(6)] == [False, False, True, False, False, True]
    before = {k: v.clone() for k, v in strategy.state_dict()["alphas"].items()}
    batch = {"tokens": torch.tensor([[1, 2, 3]]), "features": torch.randn(1, 4, 6),
             "boxes": torch.tensor([[[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2], [0, 3, 4, 8]]], dtype=torch.float),
             "num_regions": torch.tensor([4]), "image_size": torch.tensor([[10, 10]])}
    loss = strategy.arch_step(model, batch)
    assert math.isfinite(loss)
    after = strategy.state_dict()["alphas"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(block.gates is None for block in strategy.blocks.values())  # mode restored


def test_fixed_restores_sampled_path_and_state_round_trips() -> None:
    space, strategy, _ = build()
    strategy.before_weight_step()
    sampled = {label: block.active for label, block in strategy.blocks.items()}
    choices = {label: "feed_forward" for label in space.choices()}
    with strategy.fixed(choices):
        assert all(block.names[block.active] == "feed_forward" for block in strategy.blocks.values())
    assert {label: block.active for label, block in strategy.blocks.items()} == sampled
    state = strategy.state_dict()
    _, other, _ = build()
    other.load_state_dict(state)
    strategy.before_weight_step()
    other.before_weight_step()  # same generator state -> same sampled path
    assert [b.active for b in strategy.blocks.values()] == [b.active for b in other.blocks.values()]


def test_bad_strategy_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="alpha_init"):
        MmnasStrategy(MmnasStrategyConfig(alpha_init="gaussian"), seed=0)
    with pytest.raises(UserError, match="split_portion"):
        MmnasStrategy(MmnasStrategyConfig(split_portion=1.0), seed=0)
