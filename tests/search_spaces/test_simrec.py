"""The simrec search space: labels and prior, every candidate op's shapes and masks, the grid
layout read from cell boxes, supernets under each strategy, and search -> retrain on clevr_ref."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from nas.cli.main import main
from nas.errors import UserError
from nas.genotype import Genotype, load_genotype
from nas.space import fixed_block_factory
from nas.strategies.darts import DartsConfig, DartsStrategy
from nas.strategies.gdas import GdasConfig, GdasStrategy
from nas.strategies.mmnas import MmnasStrategy, MmnasStrategyConfig
from nas.strategies.spos import SposConfig, SposStrategy
from nas.task import TaskMeta
from search_spaces.simrec import SimrecConfig, SimrecSpace
from search_spaces.simrec.attention import CrossAttention, GaranAttention, Identity, Refine
from search_spaces.simrec.fusion import MultiScaleFusion, SimpleFusion
from search_spaces.simrec.grid import grid_shape
from search_spaces.simrec.language import LstmSelfAttention, TransformerEncoder
from search_spaces.simrec.ops import make_op
from tasks.clevr_ref.head import GridMaskHead
from tests.conftest import REPO

SIMREC_JSON = REPO / "genotypes" / "simrec.json"
META = TaskMeta(vocab_size=12, feature_dim=6, num_outputs=1)
H, E = 16, 10
ROWS, COLS = 3, 4

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only contend


def tiny_space(**options) -> SimrecSpace:
    return SimrecSpace(SimrecConfig(**{"hidden": H, "word_dim": E, "head_dim": 8, "ffn_mult": 2, "dropout": 0.0,
                                       "flat_mlp": 8, "max_positions": 8, **options}))


def cell_boxes(rows: int = ROWS, cols: int = COLS, batch: int = 2) -> torch.Tensor:
    """Row-major cells of a 30 x 80 image, each 10 high and 20 wide, as clevr_ref hands them."""
    cells = [[20.0 * c, 10.0 * r, 20.0 * c + 20, 10.0 * r + 10] for r in range(rows) for c in range(cols)]
    return torch.tensor(cells).expand(batch, -1, -1).clone()  # (B, N, 4)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"tokens": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]),
            "features": torch.randn(2, ROWS * COLS, META.feature_dim, generator=generator), "boxes": cell_boxes(),
            "num_regions": torch.tensor([ROWS * COLS] * 2), "image_size": torch.tensor([[30, 80], [30, 80]])}


def head() -> GridMaskHead:
    return GridMaskHead(H, 8, 0.0)


def test_labels_prior_and_the_shipped_simrec_genotype() -> None:
    space = tiny_space()
    assert space.choices() == {"language": ["lstm_sa", "transformer"], "fusion": ["simple", "multi_scale"],
                               "attention": ["garan", "cross"], "refine": ["identity", "feed_forward"]}
    genotype = load_genotype(SIMREC_JSON)
    space.validate(genotype, str(SIMREC_JSON))
    assert genotype.space == "simrec" and genotype.choices == space.prior()
    assert space.describe(genotype.choices) == "language: LSTM-SA | fusion: MSF(1,2,4) | attention: GARAN | refine: -"
    with pytest.raises(UserError, match="unknown op 'conv' for fusion. Valid ops: simple, multi_scale"):
        space.validate(Genotype("simrec", "clevr_ref", {**space.prior(), "fusion": "conv"}))


@pytest.mark.parametrize("override, message", [
    ({"hidden": 20}, "space.hidden=20: not a multiple of space.head_dim=8"),
    ({"garan_heads": 3, "head_dim": 4}, "space.hidden=16: not a multiple of space.garan_heads=3"),
    ({"dropout": 1.0}, "space.dropout=1.0: must be in [0, 1)"),
    ({"scales": [2, 4]}, "space.scales=[2, 4]: must be increasing pooling factors starting at 1"),
    ({"scales": [1, 4, 2]}, "space.scales=[1, 4, 2]: must be increasing"),
    ({"transformer_layers": 0}, "space.transformer_layers=0: must be at least 1")])
def test_bad_settings_are_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        tiny_space(**override)


def test_grid_layout_is_read_from_cell_boxes() -> None:
    keep = torch.ones(2, ROWS * COLS, dtype=torch.bool)
    assert grid_shape(cell_boxes(), keep) == (ROWS, COLS)
    assert grid_shape(cell_boxes(rows=1, cols=5), torch.ones(2, 5, dtype=torch.bool)) == (1, 5)
    assert grid_shape(cell_boxes()[:, torch.randperm(ROWS * COLS, generator=torch.Generator().manual_seed(1))],
                      keep) is None  # not row-major
    padded = keep.clone()
    padded[1, -1] = False
    assert grid_shape(cell_boxes(), padded) is None  # region tasks pad
    regions = torch.tensor([[[0.0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2], [0, 3, 4, 8]]] * 2)
    assert grid_shape(regions, torch.ones(2, 4, dtype=torch.bool)) is None


@pytest.mark.parametrize("name, cls", [("lstm_sa", LstmSelfAttention), ("transformer", TransformerEncoder)])
def test_language_ops_map_words_to_states_and_ignore_padding(name: str, cls: type) -> None:
    op = make_op(name, tiny_space().sizes(E)).eval()
    assert isinstance(op, cls)
    words, keep = torch.randn(2, 5, E), torch.tensor([[True] * 5, [True, True, True, False, False]])
    states = op(words, keep)
    assert states.shape == (2, 5, H) and torch.isfinite(states).all()
    changed = words.clone()
    changed[1, 3:] = 7.0  # what the padding holds
    torch.testing.assert_close(op(changed, keep)[1, :3], states[1, :3])
    shorter = op(words[:, :3], keep[:, :3])  # less padding: the real words' states do not move
    torch.testing.assert_close(shorter[1], states[1, :3])


def test_transformer_refuses_more_tokens_than_positions() -> None:
    op = make_op("transformer", tiny_space().sizes(E))
    with pytest.raises(UserError, match="space.max_positions=8: a batch has 9 tokens"):
        op(torch.randn(1, 9, E), torch.ones(1, 9, dtype=torch.bool))


CELL_OPS = {"simple": SimpleFusion, "multi_scale": MultiScaleFusion, "garan": GaranAttention,
            "cross": CrossAttention, "feed_forward": Refine, "identity": Identity}


@pytest.mark.parametrize("name", list(CELL_OPS))
@pytest.mark.parametrize("layout", ["grid", "regions"])
def test_cell_ops_keep_the_image_shape_and_mask_padding(name: str, layout: str) -> None:
    op = make_op(name, tiny_space().sizes(E)).eval()
    assert isinstance(op, CELL_OPS[name])
    generator = torch.Generator().manual_seed(0)
    count = ROWS * COLS
    image, text = torch.randn(2, count, H, generator=generator), torch.randn(2, 4, H, generator=generator)
    text_keep = torch.tensor([[True] * 4, [True, True, False, False]])
    image_keep = torch.ones(2, count, dtype=torch.bool)
    boxes = cell_boxes()
    if layout == "regions":
        image_keep[1, -2:] = False
        boxes = torch.rand(2, count, 4, generator=generator) * 50
    pooled = torch.randn(2, H, generator=generator)
    out = op(image, image_keep, text, text_keep, pooled, boxes)
    assert out.shape == (2, count, H) and torch.isfinite(out).all()
    # Padded words (and, for regions, padded regions) change no real cell.
    changed_text, changed_image = text.clone(), image.clone()
    changed_text[1, 2:] += 5.0
    if layout == "regions":
        changed_image[1, -2:] += 5.0
    again = op(changed_image, image_keep, changed_text, text_keep, pooled, boxes)
    torch.testing.assert_close(again[image_keep], out[image_keep])


def test_multi_scale_mixes_neighbours_on_a_grid_and_pools_regions_globally() -> None:
    op = make_op("multi_scale", tiny_space(scales=[1, 2]).sizes(E)).eval()
    rows, cols = 6, 8
    image, pooled, text = torch.randn(1, rows * cols, H), torch.randn(1, H), torch.randn(1, 2, H)
    keep, text_keep = torch.ones(1, rows * cols, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    changed = image.clone()
    changed[0, 0] += 3.0  # the top-left cell

    def moved(boxes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (op(changed, keep, text, text_keep, pooled, boxes)
                    - op(image, keep, text, text_keep, pooled, boxes)).abs().sum(-1)[0]  # (N,)

    grid = cell_boxes(rows, cols, batch=1)
    on_grid = moved(grid).reshape(rows, cols)
    # The 3x3 mixing (and the 2x2 pooling, mixed, then upsampled) reach the neighbours, not the far corner.
    assert on_grid[0, 1] > 1e-4 and on_grid[1, 0] > 1e-4 and on_grid[2, 2] > 1e-4
    assert on_grid[-1, -1] == 0 and on_grid[-1, :].max() == 0 and on_grid[:, -1].max() == 0
    # On regions, scale 2 is the mean of the real regions: every region moves.
    regions = grid[:, torch.randperm(rows * cols, generator=torch.Generator().manual_seed(1))]
    assert (moved(regions) > 1e-4).all()


def test_fixed_genotypes_build_only_their_ops_and_run_the_task_head() -> None:
    space = tiny_space()
    other = {"language": "transformer", "fusion": "simple", "attention": "cross", "refine": "feed_forward"}
    for choices in (space.prior(), other):
        model = space.build_model(META, head(), fixed_block_factory(choices))
        backbone = model.backbone
        kinds = [type(backbone.language), type(backbone.fusion), type(backbone.attention), type(backbone.refine)]
        assert kinds == [type(make_op(choices[label], space.sizes(E))) for label in space.choices()]
        logits = model(batch())
        assert logits.shape == (2, ROWS * COLS)
        logits.square().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert unused == []


def test_whole_model_on_padded_regions_with_the_grounding_head() -> None:
    from tasks.vgd.head import GroundingHead

    space = tiny_space()
    model = space.build_model(META, GroundingHead(H, 8, 0.0), fixed_block_factory(space.prior())).eval()
    data = {**batch(), "boxes": torch.rand(2, ROWS * COLS, 4, generator=torch.Generator().manual_seed(2)) * 30,
            "num_regions": torch.tensor([ROWS * COLS, 5])}
    with torch.no_grad():
        scores, deltas = model(data)
        assert scores.shape == (2, ROWS * COLS) and deltas.shape == (2, ROWS * COLS, 4)
        padded = {**data, "features": data["features"].clone()}
        padded["features"][1, 5:] += 5.0  # what the padded regions hold changes no real region's score
        torch.testing.assert_close(model(padded)[0][:, :5], scores[:, :5])
        # The backbone's two halves (what the text cache calls) give its forward.
        text, text_keep, image, image_keep = model.embedding(data["tokens"], data["features"], data["boxes"],
                                                             data["num_regions"], data["image_size"])
        encoded = model.backbone.encode_text(text, text_keep)
        torch.testing.assert_close(model.backbone.decode_image(image, image_keep, encoded, text_keep, data["boxes"]),
                                   model.backbone(text, text_keep, image, image_keep, data["boxes"])[1])


STRATEGIES = {"mmnas": (MmnasStrategy, MmnasStrategyConfig()), "darts": (DartsStrategy, DartsConfig()),
              "gdas": (GdasStrategy, GdasConfig()), "spos": (SposStrategy, SposConfig())}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_one_shot_strategy_trains_the_supernet(name: str) -> None:
    strategy_cls, config = STRATEGIES[name]
    space, strategy = tiny_space(), strategy_cls(config, seed=3)
    model = space.build_model(META, head(), strategy.make_block)
    assert sorted(strategy.blocks) == sorted(space.choices())
    assert strategy.blocks["fusion"].names == ["simple", "multi_scale"]
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
    space.validate(Genotype("simrec", "clevr_ref", strategy.genotype()))


def test_search_and_retrain_on_builtin_clevr_ref(tmp_path: Path) -> None:
    # The session's cache (tests/conftest.py): the tiny data is generated once for every clevr_ref test.
    smoke = ["--config", "smoke", "--quiet", "task.synth_size=tiny", "train.threads=1"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    # smoke.yaml's space.enc_blocks/dec_blocks/relation_dim belong to mmnas and are dropped for simrec.
    assert main(["search", "--task", "clevr_ref", "--space", "simrec", "--strategy", "darts", "--out", str(search),
                 *smoke, "space.scales=[1,2]"]) == 0
    assert main(["genotype", "validate", str(search / "genotype.json")]) == 0
    genotype = load_genotype(search / "genotype.json")
    assert genotype.space == "simrec" and genotype.task == "clevr_ref" and set(genotype.choices) == {
        "language", "fusion", "attention", "refine"}
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *smoke,
                 "train.epochs=1"]) == 0
    saved = (retrain / "config.yaml").read_text()
    assert "name: simrec" in saved and "scales:" in saved and "enc_blocks" not in saved
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["genotype"]["space"] == "simrec" and summary["test_split"] == "val"
    results = json.loads(Path(summary["results_file"]).read_text())
    assert len(results) == summary["final"]["num_refexps"] > 0
    assert {"refexp_index", "image_index", "mask_rle", "box"} <= set(results[0])
    assert 0.0 <= summary["final"]["cumulative_iou"] <= 100.0
    assert summary["baseline"]["rule"] in ("all foreground", "centre box")
