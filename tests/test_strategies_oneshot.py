"""The one-shot strategies DARTS, GDAS and SPOS: their math, their guard, and every task through the CLI."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from nas.checkpoint import load_checkpoint
from nas.cli.main import main
from nas.errors import UserError
from nas.genotype import load_genotype
from nas.strategies.base import WeightAccess
from nas.strategies.darts import DartsConfig, DartsStrategy
from nas.strategies.gdas import GdasConfig, GdasStrategy, gdas_tau
from nas.strategies.oneshot import cap_parameter_free
from nas.strategies.spos import SposConfig, SposStrategy, evolve
from nas.supernet import GatedMixedOp
from nas.task import TaskMeta
from search_spaces.mmnas import MmnasConfig, MmnasSpace
from search_spaces.mmnas.ops import OpSizes, make_op

SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]
STRATEGIES = ["darts", "gdas", "spos"]
# Fewer evolution candidates keep the CLI tests at a few seconds (matching scores every image-caption pair).
QUICK = {"darts": [], "gdas": [], "spos": ["strategy.population=4", "strategy.generations=2"]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only contend


class Probe(torch.nn.Module):
    """A head whose output is a scalar that depends on every image position and feature."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.target = torch.nn.Parameter(torch.linspace(-1, 1, hidden), requires_grad=False)

    def forward(self, text, text_keep, image, image_keep):
        # image: (B, N, H) -> scalar
        return (image - self.target).pow(3).mean() + text.mean()


def build(strategy_cls, config, dropout: float = 0.0):
    space = MmnasSpace(MmnasConfig(hidden=16, head_dim=8, relation_dim=4, enc_blocks=2, dec_blocks=3,
                                   dropout=dropout))
    strategy = strategy_cls(config, seed=3)
    model = space.build_model(TaskMeta(vocab_size=10, feature_dim=6, num_outputs=2), Probe(16), strategy.make_block)
    strategy.attach(space.prior(), torch.device("cpu"))
    return space, strategy, model


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"tokens": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), "features": torch.randn(2, 4, 6, generator=generator),
            "boxes": torch.tensor([[[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2], [0, 3, 4, 8]]] * 2, dtype=torch.float),
            "num_regions": torch.tensor([4, 3]), "image_size": torch.tensor([[10, 10], [10, 10]])}


def block_inputs(hidden: int = 16) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, hidden, generator=generator)  # (B, N, H)
    context = torch.randn(2, 3, hidden, generator=generator)  # (B, T, H)
    relation = torch.randn(2, 4, 4, 4, generator=generator)  # (B, N, N, R)
    return x, torch.ones(2, 4, dtype=torch.bool), context, torch.ones(2, 3, dtype=torch.bool), relation


def decoder_block() -> GatedMixedOp:
    sizes = OpSizes(hidden=16, head_dim=8, ffn_mult=2, dropout=0.0, relation_dim=4)
    names = ["self_att", "rel_self_att", "guided_att", "feed_forward"]
    return GatedMixedOp("dec/0", {name: make_op(name, sizes) for name in names}).eval()


# --- the mixed op -----------------------------------------------------------------------------------------------


def test_darts_block_output_is_the_weighted_sum_of_its_candidates() -> None:
    block, inputs = decoder_block(), block_inputs()
    block.weights = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.5]), dim=0)
    expected = sum(w * op(*inputs) for w, op in zip(block.weights, block.candidates))
    torch.testing.assert_close(block(*inputs), expected)
    # The strategy puts softmax(alpha) on every block.
    _, strategy, _ = build(DartsStrategy, DartsConfig())
    for label, mixed in strategy.blocks.items():
        torch.testing.assert_close(mixed.weights, torch.softmax(strategy.alpha(label).detach(), dim=0))


def test_gdas_forward_is_the_sampled_op_only_and_alpha_gets_a_gradient() -> None:
    _, strategy, _ = build(GdasStrategy, GdasConfig())
    sizes = OpSizes(hidden=16, head_dim=8, ffn_mult=2, dropout=0.0, relation_dim=4)
    block = strategy.make_block("dec/9", ["self_att", "rel_self_att", "guided_att", "feed_forward"],
                                lambda name: make_op(name, sizes)).eval()
    strategy.alphas["dec__9"] = torch.nn.Parameter(torch.tensor([0.1, 0.2, -0.3, 0.0]))
    calls = []
    for index, op in enumerate(block.candidates):
        op.register_forward_hook(lambda module, args, out, index=index: calls.append(index))
    inputs = block_inputs()
    strategy.begin_epoch(1, 4)
    strategy.sample_hard()
    out = block(*inputs)
    assert calls == [block.active]  # one op ran
    assert float(block.scale.detach()) == pytest.approx(1.0)
    torch.testing.assert_close(out, block.candidates[block.active](*inputs))
    (grad,) = torch.autograd.grad(out.pow(2).sum(), [strategy.alphas["dec__9"]])
    assert torch.count_nonzero(grad) == 4  # through the soft sample, every logit
    # Weight steps run a sampled op with no gradient path to alpha.
    strategy.before_weight_step()
    assert block.scale is None and block.weights is None
    assert torch.autograd.grad(block(*inputs).sum(), [strategy.alphas["dec__9"]], allow_unused=True) == (None,)


def test_gdas_temperature_falls_linearly_and_is_saved() -> None:
    assert [gdas_tau(e, 5, 10.0, 0.1) for e in range(5)] == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    assert gdas_tau(0, 1, 10.0, 0.1) == 10.0
    _, strategy, _ = build(GdasStrategy, GdasConfig(tau_max=4.0, tau_min=1.0))
    assert strategy.tau == 4.0
    strategy.begin_epoch(2, 3)
    assert strategy.tau == 1.0
    _, other, _ = build(GdasStrategy, GdasConfig(tau_max=4.0, tau_min=1.0))
    other.load_state_dict(strategy.state_dict())
    assert other.tau == 1.0
    with pytest.raises(UserError, match="tau_min"):
        GdasStrategy(GdasConfig(tau_min=0.0), seed=0)


def test_gdas_arch_step_moves_alpha_and_leaves_no_scale_behind() -> None:
    _, strategy, model = build(GdasStrategy, GdasConfig(arch_lr=0.05))
    before = {k: v.clone() for k, v in strategy.state_dict()["alphas"].items()}
    loss = strategy.arch_step(lambda b: model(b), batch())
    assert math.isfinite(loss)
    after = strategy.state_dict()["alphas"]
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert all(block.scale is None for block in strategy.blocks.values())


# --- DARTS, first and second order ------------------------------------------------------------------------------


def _one_arch_step(**overrides) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)  # identical weights for every call
    _, strategy, model = build(DartsStrategy, DartsConfig(arch_lr=0.01, **overrides))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=0.5)
    weights = WeightAccess(params, optimizer, batch(1))
    strategy.arch_step_with_weights(lambda b: model(b), batch(2), weights)
    return strategy.state_dict()["alphas"], before, [p.detach().clone() for p in params]


def test_second_order_darts_differs_from_first_order_and_restores_the_weights() -> None:
    first, _, first_after = _one_arch_step()
    second, before, after = _one_arch_step(second_order=True)
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # restored exactly
    assert all(torch.equal(a, b) for a, b in zip(before, first_after))
    assert any(not torch.equal(first[k], second[k]) for k in first)
    # With a zero virtual step (xi = 0) the unrolled gradient is the first-order one.
    zero, _, _ = _one_arch_step(second_order=True, unrolled_lr=0.0)
    for k in first:
        torch.testing.assert_close(zero[k], first[k])


def test_darts_arch_step_uses_the_held_out_loss_gradient() -> None:
    _, strategy, model = build(DartsStrategy, DartsConfig(arch_lr=0.01))
    data = batch()
    alphas = strategy.alpha_list()
    strategy._mix(True)
    expected = torch.autograd.grad(model(data), alphas)
    before = [a.detach().clone() for a in alphas]
    strategy.arch_step(lambda b: model(b), data)
    for alpha, old, grad in zip(alphas, before, expected):
        # Adam's first step moves each logit by lr against the sign of its gradient (decay 1e-3 is tiny here).
        moved = alpha.detach() - old
        assert torch.all(torch.sign(moved[grad.abs() > 1e-6]) == -torch.sign(grad[grad.abs() > 1e-6]))
    assert all(not block.weights.requires_grad for block in strategy.blocks.values())


# --- SPOS --------------------------------------------------------------------------------------------------------


def _toy_space() -> dict[str, list[str]]:
    return MmnasSpace(MmnasConfig(enc_blocks=2, dec_blocks=3)).choices()


def _toy_score(choices) -> float:
    # Best: feed-forward in the encoder, guided attention in the decoder (one subnet of 256).
    return sum((op == "feed_forward") if label.startswith("enc") else (op == "guided_att") * 1.5
               for label, op in choices.items())


def test_spos_evolution_returns_the_best_scoring_subnet() -> None:
    config = SposConfig(population=12, parents=4, mutations=6, crossovers=6, mutation_prob=0.3, generations=6)
    calls = []
    result = evolve(_toy_space(), lambda c: calls.append(dict(c)) or _toy_score(c), config,
                    torch.Generator().manual_seed(0))
    assert result.score == max(score for _, score in result.scored)
    assert result.best == {"enc/0": "feed_forward", "enc/1": "feed_forward", "dec/0": "guided_att",
                           "dec/1": "guided_att", "dec/2": "guided_att"}
    assert len(calls) == len(result.scored) <= 12 * 6  # no subnet is scored twice
    assert len({tuple(c.values()) for c in calls}) == len(calls)
    again = evolve(_toy_space(), _toy_score, config, torch.Generator().manual_seed(0))
    assert again.scored == result.scored


def test_spos_samples_uniform_paths_and_respects_the_cap() -> None:
    _, strategy, _ = build(SposStrategy, SposConfig(max_parameter_free=1))
    probs = strategy.probabilities()
    assert probs["dec/0"] == {op: 0.25 for op in probs["dec/0"]}
    assert strategy.genotype() == MmnasSpace(MmnasConfig(enc_blocks=2, dec_blocks=3)).prior()
    seen = set()
    for _ in range(40):
        strategy.before_weight_step()
        seen.add(strategy.blocks["dec/0"].active)
    assert seen == {0, 1, 2, 3}
    strategy.parameter_free_ops = frozenset({"feed_forward"})
    final = strategy.finish(_toy_score_ffn_everywhere)
    assert sum(op == "feed_forward" for op in final.values()) <= 1
    assert strategy.genotype() == final and strategy.state_dict()["best"] == final


def _toy_score_ffn_everywhere(choices) -> float:
    return sum(op == "feed_forward" for op in choices.values())


# --- the collapse guard ------------------------------------------------------------------------------------------


def test_cap_replaces_the_weakest_parameter_free_choices(caplog: pytest.LogCaptureFixture) -> None:
    choices = {"a": "skip", "b": "skip", "c": "conv", "d": "skip"}
    strengths = {"a": {"skip": 0.9, "conv": 0.05, "mlp": 0.05}, "b": {"skip": 0.4, "conv": 0.2, "mlp": 0.4},
                 "c": {"skip": 0.1, "conv": 0.9, "mlp": 0.0}, "d": {"skip": 0.6, "conv": 0.3, "mlp": 0.1}}
    with caplog.at_level(logging.WARNING, logger="nas.strategies"):
        capped = cap_parameter_free(choices, strengths, frozenset({"skip"}), cap=1)
    assert capped == {"a": "skip", "b": "mlp", "c": "conv", "d": "conv"}
    assert "max_parameter_free=1" in caplog.text and "b: skip -> mlp" in caplog.text
    assert cap_parameter_free(choices, strengths, frozenset({"skip"}), cap=None) == choices
    assert cap_parameter_free(choices, strengths, frozenset({"skip"}), cap=3) == choices


@pytest.mark.parametrize("strategy_cls,config_cls", [(DartsStrategy, DartsConfig), (GdasStrategy, GdasConfig)])
def test_genotype_export_caps_parameter_free_ops(strategy_cls, config_cls) -> None:
    _, strategy, _ = build(strategy_cls, config_cls(max_parameter_free=1))
    strategy.parameter_free_ops = frozenset({"feed_forward"})  # pretend, for the test
    with torch.no_grad():
        for index, (label, block) in enumerate(strategy.blocks.items()):
            logits = torch.zeros(len(block.names))
            logits[block.names.index("feed_forward")] = 1.0 + index  # the last block is surest of it
            logits[0] = 0.5
            strategy.alpha(label).copy_(logits)
    choices = strategy.genotype()
    assert [label for label, op in choices.items() if op == "feed_forward"] == ["dec/2"]
    assert all(op == "self_att" for label, op in choices.items() if label != "dec/2")


def test_search_loop_hands_the_space_parameter_free_ops_to_the_strategy(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MmnasSpace, "parameter_free_ops", frozenset({"feed_forward"}))
    assert main(["search", "--task", "vqa", "--strategy", "darts", "--out", str(tmp_path), *SMOKE,
                 "strategy.max_parameter_free=0", "train.epochs=1"]) == 0
    assert "feed_forward" not in load_genotype(tmp_path / "genotype.json").choices.values()


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="max_parameter_free"):
        DartsStrategy(DartsConfig(max_parameter_free=-1), seed=0)
    with pytest.raises(UserError, match="split_portion"):
        GdasStrategy(GdasConfig(split_portion=0.0), seed=0)
    with pytest.raises(UserError, match="population"):
        SposStrategy(SposConfig(population=0), seed=0)
    with pytest.raises(UserError, match="arch_betas"):
        DartsStrategy(DartsConfig(arch_betas=[0.5]), seed=0)


# --- through the CLI ---------------------------------------------------------------------------------------------


def _search(out: Path, task: str, strategy: str, *extra: str) -> dict:
    assert main(["search", "--task", task, "--strategy", strategy, "--out", str(out), *SMOKE, *QUICK[strategy],
                 *extra]) == 0
    return {"genotype": load_genotype(out / "genotype.json"),
            "log": [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()],
            "state": load_checkpoint(out / "search_checkpoint.pt")["strategy"]}


@pytest.mark.parametrize("task", ["vqa", "vgd", "itm"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_searches_every_task(strategy: str, task: str, tmp_path: Path) -> None:
    run = _search(tmp_path, task, strategy)
    genotype = run["genotype"]
    assert genotype.task == task and genotype.provenance["strategy"] == strategy
    assert main(["genotype", "validate", str(tmp_path / "genotype.json")]) == 0
    log = run["log"]
    assert [r["epoch"] for r in log] == [1, 2]
    for record in log:
        assert set(record["entropy"]) == set(genotype.choices)
        assert all(0.0 <= h <= math.log(4) + 1e-9 for h in record["entropy"].values())
        assert record["mean_entropy"] == pytest.approx(sum(record["entropy"].values()) / len(record["entropy"]))
    if strategy == "spos":
        assert genotype.choices == run["state"]["best"]  # the evolution's winner
        assert "arch_loss" not in log[1]
        assert log[1]["mean_entropy"] == pytest.approx((2 * math.log(2) + 3 * math.log(4)) / 5)
    else:
        assert "arch_loss" in log[1] and "arch_loss" not in log[0]  # smoke.yaml: one warm-up epoch
    assert "entropy=" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("strategy,extra", [("darts", ()), ("darts", ("strategy.second_order=true",)),
                                            ("gdas", ()), ("spos", ())])
def test_same_seed_gives_the_same_genotype_and_architecture_parameters(strategy: str, extra: tuple,
                                                                      tmp_path: Path) -> None:
    first = _search(tmp_path / "a", "vqa", strategy, "--seed", "5", *extra)
    second = _search(tmp_path / "b", "vqa", strategy, "--seed", "5", *extra)
    assert first["genotype"].choices == second["genotype"].choices
    assert [r["probabilities"] for r in first["log"]] == [r["probabilities"] for r in second["log"]]
    if strategy == "spos":
        assert first["state"]["best_score"] == second["state"]["best_score"]
        assert torch.equal(first["state"]["generator"], second["state"]["generator"])
    else:
        alphas = first["state"]["alphas"]
        assert alphas and all(torch.equal(alphas[k], second["state"]["alphas"][k]) for k in alphas)
        assert any(not torch.equal(v, torch.zeros_like(v)) for v in alphas.values())
    if strategy == "gdas":
        assert first["state"]["tau"] == second["state"]["tau"] == pytest.approx(0.1)


class _Crash(Exception):
    pass


# Weight steps per epoch at batch 8 on the tiny data: 15 (split 0.5) or 24 (spos, split 0.8); crash at step 5 of epoch 2.
@pytest.mark.parametrize("strategy,extra,crash_at", [("darts", ("strategy.second_order=true",), 20),
                                                     ("gdas", (), 20), ("spos", (), 29)])
def test_mid_epoch_crash_then_rerun_equals_an_uninterrupted_search(strategy: str, extra: tuple, crash_at: int,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["train.batch_size=8", "train.checkpoint_every=4", *extra]
    whole = _search(tmp_path / "whole", "vqa", strategy, *args)
    from nas.registry import STRATEGIES

    cls = STRATEGIES.get(strategy)
    original, count = cls.before_weight_step, []

    def crash_in_epoch_two(self) -> None:
        count.append(1)
        if len(count) == crash_at:
            raise _Crash
        original(self)

    monkeypatch.setattr(cls, "before_weight_step", crash_in_epoch_two)
    with pytest.raises(_Crash):
        _search(tmp_path / "crashed", "vqa", strategy, *args)
    monkeypatch.setattr(cls, "before_weight_step", original)
    at_crash = load_checkpoint(tmp_path / "crashed" / "search_checkpoint.pt")
    assert at_crash["epoch"] == 1 and at_crash["progress"]["steps"] == 4
    resumed = _search(tmp_path / "crashed", "vqa", strategy, *args)
    assert resumed["genotype"].choices == whole["genotype"].choices
    for a, b in zip(resumed["log"], whole["log"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["probabilities"] == b["probabilities"]
    assert torch.equal(whole["state"]["generator"], resumed["state"]["generator"])
    for label, alpha in whole["state"].get("alphas", {}).items():
        assert torch.equal(alpha, resumed["state"]["alphas"][label])
    for key in ("tau", "best", "best_score"):
        assert whole["state"].get(key) == resumed["state"].get(key)
