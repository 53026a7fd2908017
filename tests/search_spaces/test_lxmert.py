"""The lxmert search space: labels, lxr955, shared cross-attention, supernets and the CLI on GQA."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from nas.board.diagrams import streams_of
from nas.cli.main import main
from nas.errors import UserError
from nas.genotype import Genotype, load_genotype
from nas.heads import FusionHead
from nas.space import fixed_block_factory
from nas.strategies.darts import DartsConfig, DartsStrategy
from nas.strategies.gdas import GdasConfig, GdasStrategy
from nas.strategies.mmnas import MmnasStrategy, MmnasStrategyConfig
from nas.strategies.spos import SposConfig, SposStrategy
from nas.task import TaskMeta
from search_spaces.lxmert import LxmertConfig, LxmertSpace
from search_spaces.lxmert.ops import CrossAttention
from tasks.gqa.task import SYNTH_SIZES
from tests.conftest import REPO

LXR955 = REPO / "genotypes" / "lxr955.json"
META = TaskMeta(vocab_size=10, feature_dim=6, num_outputs=5)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only contend


def tiny_space(lang: int = 2, obj: int = 1, cross: int = 2, **options) -> LxmertSpace:
    return LxmertSpace(LxmertConfig(hidden=16, head_dim=8, ffn_mult=2, relation_dim=4, dropout=0.0,
                                    lang_layers=lang, obj_layers=obj, cross_layers=cross, **options))


def head() -> FusionHead:
    return FusionHead(hidden=16, flat_mlp=8, num_outputs=META.num_outputs, dropout=0.0)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"tokens": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), "features": torch.randn(2, 4, 6, generator=generator),
            "boxes": torch.tensor([[[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2], [0, 3, 4, 8]]] * 2, dtype=torch.float),
            "num_regions": torch.tensor([4, 3]), "image_size": torch.tensor([[10, 12], [10, 12]])}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a shared module counts once


def test_labels_prior_and_depths_round_trip() -> None:
    space = tiny_space(lang=2, obj=1, cross=1)
    choices = space.choices()
    assert list(choices) == ["lang/0/self", "lang/0/ffn", "lang/1/self", "lang/1/ffn", "obj/0/self", "obj/0/ffn",
                             "cross/0/lang_cross", "cross/0/obj_cross", "cross/0/lang_self", "cross/0/obj_self",
                             "cross/0/lang_ffn", "cross/0/obj_ffn"]
    assert choices["obj/0/self"] == ["self_att", "rel_self_att", "identity"]
    assert choices["cross/0/obj_cross"] == ["cross_att", "identity"]
    assert all("identity" in ops for ops in choices.values())  # every sublayer can be skipped
    prior = space.prior()
    assert set(prior.values()) == {"self_att", "feed_forward", "cross_att"}
    assert LxmertSpace.config_from_choices(prior) == {"lang_layers": 2, "obj_layers": 1, "cross_layers": 1}
    # A corrupted index past the bound does not become a depth; validation names it instead.
    assert LxmertSpace.config_from_choices({**prior, "cross/99999999/obj_ffn": "identity"})["cross_layers"] == 1
    space.validate(Genotype("lxmert", "gqa", prior))
    skipped = {**prior, "lang/1/self": "identity", "lang/1/ffn": "identity", "cross/0/obj_self": "rel_self_att"}
    assert space.describe(skipped) == "lang: SA+FFN, - | obj: SA+FFN | cross (lang/obj): X+SA+FFN/X+RSA+FFN"
    # nas board draws one row per sublayer kind, one column per layer.
    assert list(streams_of(list(choices))) == ["lang/self", "lang/ffn", "obj/self", "obj/ffn", "cross/lang_cross",
                                               "cross/obj_cross", "cross/lang_self", "cross/obj_self",
                                               "cross/lang_ffn", "cross/obj_ffn"]
    assert streams_of(list(choices))["lang/ffn"] == ["lang/0/ffn", "lang/1/ffn"]


@pytest.mark.parametrize("override, message", [({"head_dim": 0}, "space.head_dim=0: must be at least 1"),
                                               ({"hidden": 30}, "space.hidden=30: not a multiple of space.head_dim=8"),
                                               ({"dropout": 1.0}, "space.dropout=1.0: must be in [0, 1)"),
                                               ({"cross_layers": 5000}, "space.cross_layers=5000: must be between"),
                                               ({"norm": "mid"}, "space.norm='mid': must be one of post, pre")])
def test_bad_sizes_are_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        LxmertSpace(LxmertConfig(**{"hidden": 16, "head_dim": 8, **override}))


def test_lxr955_validates_and_matches_lxmerts_encoder_size() -> None:
    genotype = load_genotype(LXR955)
    depths = LxmertSpace.config_from_choices(genotype.choices)
    assert depths == {"lang_layers": 9, "obj_layers": 5, "cross_layers": 5}
    space = LxmertSpace(LxmertConfig(**depths))  # LXMERT's sizes: H 768, 12 heads, FFN 3072
    space.validate(genotype, str(LXR955))
    assert genotype.choices == space.prior()
    assert space.describe(genotype.choices) == \
        "lang: SA+FFN x9 | obj: SA+FFN x5 | cross (lang/obj): X+SA+FFN/X+SA+FFN x5"
    with torch.device("meta"):  # sizes only, no 180M-parameter allocation
        model = space.build_model(TaskMeta(vocab_size=30, feature_dim=2048, num_outputs=3), torch.nn.Identity(),
                                  fixed_block_factory(genotype.choices))
        unshared = LxmertSpace(LxmertConfig(share_cross_attention=False)).build_model(
            TaskMeta(vocab_size=30, feature_dim=2048, num_outputs=3), torch.nn.Identity(),
            fixed_block_factory(genotype.choices))
    # By hand, H = 768, F = 3072: an attention sublayer is 4 (H*H + H) + 2H (LayerNorm) = 2,363,904; a
    # feed-forward sublayer (H*F + F) + (F*H + H) + 2H = 4,723,968; a BERT layer 7,087,872. Language 9 and
    # object 5 layers: 14 * 7,087,872 = 99,230,208. A cross layer: ONE shared cross-attention, two
    # self-attentions, two feed-forwards = 3 * 2,363,904 + 2 * 4,723,968 = 16,539,648; five: 82,698,240.
    assert count(model.backbone) == 99_230_208 + 82_698_240 == 181_928_448
    assert count(unshared.backbone) - count(model.backbone) == 5 * 2_363_904  # one more attention per layer


def test_forward_backward_shapes_and_padding() -> None:
    space = tiny_space()
    choices = {**space.prior(), "obj/0/self": "rel_self_att", "cross/0/lang_cross": "identity",
               "cross/1/obj_self": "rel_self_att", "lang/1/ffn": "identity"}
    model = space.build_model(META, head(), fixed_block_factory(choices))
    data = batch()
    text, text_keep, image, image_keep = model.embedding(data["tokens"], data["features"], data["boxes"],
                                                         data["num_regions"], data["image_size"])
    assert text.shape == (2, 4, 16) and image.shape == (2, 4, 16)
    assert text_keep.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert image_keep.tolist() == [[True] * 4, [True, True, True, False]]
    out_text, out_image = model.backbone(text, text_keep, image, image_keep, data["boxes"])
    assert out_text.shape == text.shape and out_image.shape == image.shape
    assert model.backbone.relation is not None  # relation attention is chosen, so the geometry embedding exists
    logits = model(data)
    assert logits.shape == (2, META.num_outputs)
    logits.square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    # The masks hold: what a padded region holds changes no logit.
    model.eval()
    with torch.no_grad():
        reference = model(data)
        padded = {**data, "features": data["features"].clone()}
        padded["features"][1, 3] += 5.0
        torch.testing.assert_close(model(padded), reference)


def test_identity_everywhere_is_the_identity() -> None:
    space = tiny_space()
    choices = {label: "identity" for label in space.choices()}
    model = space.build_model(META, head(), fixed_block_factory(choices))
    assert count(model.backbone) == 0 and model.backbone.relation is None
    text, image = torch.randn(2, 4, 16), torch.randn(2, 3, 16)
    out_text, out_image = model.backbone(text, torch.ones(2, 4, dtype=torch.bool), image,
                                         torch.ones(2, 3, dtype=torch.bool), torch.rand(2, 3, 4))
    assert torch.equal(out_text, text) and torch.equal(out_image, image)


def test_pre_ln_passes_both_streams_through_and_normalises_the_cross_attention_context() -> None:
    choices = {**tiny_space().prior(), "obj/0/self": "rel_self_att"}
    pre = tiny_space(norm="pre").build_model(META, head(), fixed_block_factory(choices)).eval()
    post = tiny_space().build_model(META, head(), fixed_block_factory(choices))
    extra = set(pre.state_dict()) - set(post.state_dict())
    assert set(post.state_dict()) < set(pre.state_dict())  # post-LN checkpoints keep their keys
    assert extra == {f"backbone.{name}" for name in ("text_norm.weight", "text_norm.bias", "image_norm.weight",
                                                     "image_norm.bias")} | {
        f"backbone.cross.{i}.{slot}.context_norm.{p}" for i in range(2) for slot in ("lang_cross", "obj_cross")
        for p in ("weight", "bias")}
    data = batch()
    text, text_keep, image, image_keep = pre.embedding(data["tokens"], data["features"], data["boxes"],
                                                       data["num_regions"], data["image_size"])
    # The other stream reaches a pre-LN cross-attention normalised: scaling it changes nothing.
    cross = pre.backbone.cross[0]["obj_cross"]
    with torch.no_grad():
        torch.testing.assert_close(cross(image, image_keep, 3 * text, text_keep),
                                   cross(image, image_keep, text, text_keep), atol=1e-5, rtol=1e-5)
        # With every sublayer's output projection at zero, each stream passes through untouched to its
        # closing LayerNorm.
        for name, parameter in pre.backbone.named_parameters():
            if re.search(r"(attention\.merge|\.output)\.(weight|bias)$", name):
                parameter.zero_()
        out_text, out_image = pre.backbone(text, text_keep, image, image_keep, data["boxes"])
    torch.testing.assert_close(out_text, pre.backbone.text_norm(text))
    torch.testing.assert_close(out_image, pre.backbone.image_norm(image))
    pre.train()
    pre(data).square().sum().backward()
    for name, parameter in pre.named_parameters():
        if "merge" not in name and ".output." not in name:  # cut off by the zeroed projections after them
            continue
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("share", [True, False])
def test_cross_attention_is_shared_between_directions_when_asked(share: bool) -> None:
    space = tiny_space(share_cross_attention=share)
    model = space.build_model(META, head(), fixed_block_factory(space.prior()))
    layers = model.backbone.cross
    lang, obj = layers[0]["lang_cross"], layers[0]["obj_cross"]
    assert isinstance(lang, CrossAttention) and isinstance(obj, CrossAttention)
    assert (lang is obj) == share
    assert layers[0]["lang_cross"] is not layers[1]["lang_cross"]  # never shared across layers
    one_attention = 4 * (16 * 16 + 16) + 2 * 16
    shared_model = tiny_space(share_cross_attention=True).build_model(META, head(), fixed_block_factory(space.prior()))
    assert count(model) - count(shared_model) == (0 if share else 2 * one_attention)
    # The supernet's two mixed ops hold the same candidate module too.
    strategy = DartsStrategy(DartsConfig(), seed=0)
    space.build_model(META, head(), strategy.make_block)
    lang_block, obj_block = strategy.blocks["cross/0/lang_cross"], strategy.blocks["cross/0/obj_cross"]
    assert (lang_block.candidates[0] is obj_block.candidates[0]) == share


STRATEGIES = {"mmnas": (MmnasStrategy, MmnasStrategyConfig()), "darts": (DartsStrategy, DartsConfig()),
              "gdas": (GdasStrategy, GdasConfig()), "spos": (SposStrategy, SposConfig())}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_one_shot_strategy_trains_the_supernet(name: str) -> None:
    strategy_cls, config = STRATEGIES[name]
    space, strategy = tiny_space(obj=1, cross=1), strategy_cls(config, seed=3)
    model = space.build_model(META, head(), strategy.make_block)
    strategy.parameter_free_ops = frozenset(space.parameter_free_ops)
    strategy.attach(space.prior(), torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    strategy.before_weight_step()
    loss = model(batch()).square().mean()
    loss.backward()
    optimizer.step()
    assert math.isfinite(float(loss.detach()))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if name != "spos":  # SPOS has no architecture steps
        assert math.isfinite(strategy.arch_step(lambda b: model(b).square().mean(), batch(1)))
    space.validate(Genotype("lxmert", "gqa", strategy.genotype()))


@pytest.mark.parametrize("strategy_cls, config_cls", [(DartsStrategy, DartsConfig), (GdasStrategy, GdasConfig)])
def test_max_parameter_free_caps_skipped_sublayers_at_export(strategy_cls, config_cls) -> None:
    config = config_cls(max_parameter_free=3)
    space, strategy = tiny_space(), strategy_cls(config, seed=0)
    space.build_model(META, head(), strategy.make_block)
    strategy.parameter_free_ops = frozenset(space.parameter_free_ops)
    strategy.attach(None, torch.device("cpu"))
    with torch.no_grad():  # every block prefers identity, later blocks more strongly
        for index, (label, block) in enumerate(strategy.blocks.items()):
            strategy.alpha(label).copy_(torch.zeros(len(block.names)))
            strategy.alpha(label)[block.names.index("identity")] = 1.0 + index
    genotype = strategy.genotype()
    space.validate(Genotype("lxmert", "gqa", genotype))
    assert [label for label, op in genotype.items() if op == "identity"] == \
        ["cross/1/obj_self", "cross/1/lang_ffn", "cross/1/obj_ffn"]  # the three strongest kept
    config.max_parameter_free = None
    assert set(strategy.genotype().values()) == {"identity"}  # without the cap: full collapse


def test_search_and_retrain_on_builtin_gqa(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "gqa"
    sizes = [f"{key}={value}" for key, value in SYNTH_SIZES["tiny"].items()]
    assert main(["data", "synth", "--task", "gqa", "--out", str(data), "--quiet", *sizes]) == 0
    smoke = ["--config", "smoke", "--quiet", "--data", str(data), "train.threads=1",
             f"task.cache_dir={tmp_path / 'cache'}"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    # smoke.yaml's space.enc_blocks/dec_blocks belong to mmnas and are dropped for lxmert.
    assert main(["search", "--task", "gqa", "--space", "lxmert", "--strategy", "darts", "--out", str(search), *smoke,
                 "space.lang_layers=2", "space.obj_layers=1", "space.cross_layers=1",
                 "strategy.max_parameter_free=2"]) == 0
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    genotype = load_genotype(search / "genotype.json")
    assert genotype.space == "lxmert" and len(genotype.choices) == 12
    assert sum(op == "identity" for op in genotype.choices.values()) <= 2
    assert main(["retrain", "--genotype", str(LXR955), "--task", "gqa", "--out", str(retrain), *smoke,
                 "space.hidden=16", "space.head_dim=8", "train.epochs=1"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    saved = (retrain / "config.yaml").read_text()
    assert "lang_layers: 9" in saved and "cross_layers: 5" in saved and "enc_blocks" not in saved
    assert summary["genotype"]["space"] == "lxmert" and summary["final"]["questions"] == 80  # tiny val split
    assert 0.0 <= summary["final"]["accuracy"] <= 100.0 and summary["test"]["questions"] > 0
    # The GQA retrain starts an NLVR2 one (the built-in sets share the feature prototypes): the whole
    # embedding and backbone, and the AttFlat pooling that GQA's head and NLVR2's pair head share.
    nlvr2 = tmp_path / "nlvr2"
    assert main(["retrain", "--genotype", str(LXR955), "--task", "nlvr2", "--out", str(nlvr2), "--config", "smoke",
                 "--quiet", "train.threads=1", f"task.cache_dir={tmp_path / 'cache'}", "space.hidden=16",
                 "space.head_dim=8", "train.epochs=1", "--init", str(retrain / "checkpoints" / "best.pt")]) == 0
    log = (nlvr2 / "log.txt").read_text()
    assert "train.init: 496 embedding and backbone tensors and 14 head pooling tensors" in log
    assert json.loads((nlvr2 / "summary.json").read_text())["final"]["num_examples"] > 0
    # Typed on the command line, another space's key is still a mistake.
    capsys.readouterr()
    assert main(["search", "--task", "gqa", "--space", "lxmert", "--out", str(tmp_path / "bad"), *smoke,
                 "space.enc_blocks=2"]) == 2
    assert "unknown key 'space.enc_blocks'" in capsys.readouterr().err


def test_more_tokens_than_positions_is_a_one_line_error() -> None:
    space = tiny_space(max_positions=3)
    model = space.build_model(META, head(), fixed_block_factory(space.prior()))
    with pytest.raises(UserError, match="space.max_positions=3: a batch has 4 tokens; raise space.max_positions"):
        model({**batch(), "tokens": torch.ones(2, 4, dtype=torch.long)})
