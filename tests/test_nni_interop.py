"""NNI interop (extra [nni]): the space as an NNI model space, NNI's exports as genotypes, and
NNI's own one-shot strategies searching it through ``nas search --strategy nni``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("nni")
pytest.importorskip("pytorch_lightning")
with warnings.catch_warnings():
    # NNI 3.0 warns at import about torch.nn classes newer than itself (e.g. torch.nn.Buffer).
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
    try:
        import nni.nas.evaluator.pytorch  # noqa: F401  (NNI 3.0 with a Lightning it can import)
    except ImportError as error:
        pytest.skip(f"NNI cannot load its Lightning evaluator: {error}", allow_module_level=True)
    from nni.nas.nn.pytorch import LayerChoice

from nas.cli.main import main  # noqa: E402
from nas.errors import UserError  # noqa: E402
from nas.genotype import load_genotype, save_genotype  # noqa: E402
from nas.interop.nni_genotype import genotype_from_nni  # noqa: E402
from nas.interop.nni_space import NniModelSpace, frozen_network  # noqa: E402
from nas.space import fixed_block_factory  # noqa: E402
from nas.task import TaskMeta  # noqa: E402
from search_spaces.mmnas import MmnasConfig, MmnasSpace  # noqa: E402

SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]
META = TaskMeta(vocab_size=10, feature_dim=6, num_outputs=2)
SAMPLE = {"enc/0": "self_att", "enc/1": "feed_forward",
          "dec/0": "rel_self_att", "dec/1": "guided_att", "dec/2": "feed_forward"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only contend


class Probe(torch.nn.Module):
    """A head whose scalar output depends on every text and image position."""

    def forward(self, text, text_keep, image, image_keep):
        return image.pow(3).mean() + text.mean()


def tiny_space() -> MmnasSpace:
    return MmnasSpace(MmnasConfig(hidden=16, head_dim=8, relation_dim=4, enc_blocks=2, dec_blocks=3, dropout=0.0))


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"tokens": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), "features": torch.randn(2, 4, 6, generator=generator),
            "boxes": torch.tensor([[[0, 0, 5, 5], [6, 6, 9, 9], [1, 1, 2, 2], [0, 3, 4, 8]]] * 2, dtype=torch.float),
            "num_regions": torch.tensor([4, 3]), "image_size": torch.tensor([[10, 10], [10, 10]])}


def test_the_model_space_has_one_layer_choice_per_label_with_its_ops() -> None:
    space = tiny_space()
    model_space = NniModelSpace(space, META, Probe())
    choices = [module for module in model_space.modules() if isinstance(module, LayerChoice)]
    assert [c.label for c in choices] == list(space.choices())
    for choice in choices:
        assert choice.names == space.choices()[choice.label]
        assert [type(op).__name__ for op in choice] == [
            {"self_att": "SelfAttention", "rel_self_att": "RelationSelfAttention", "guided_att": "GuidedAttention",
             "feed_forward": "FeedForward"}[name] for name in choice.names]
    # What NNI's strategies search: exactly our labels and candidates, nothing else.
    assert {label: mutable.values for label, mutable in model_space.simplify().items()} == space.choices()


def test_a_frozen_nni_sample_is_our_fixed_child_network() -> None:
    space = tiny_space()
    model_space = NniModelSpace(space, META, Probe())
    child = frozen_network(model_space, SAMPLE).eval()
    fixed = space.build_model(META, Probe(), fixed_block_factory(SAMPLE)).eval()
    # Same module tree and state-dict keys: the frozen weights load strictly, and give the same output.
    fixed.load_state_dict(child.state_dict(), strict=True)
    torch.testing.assert_close(child(batch()), fixed(batch()))
    # freeze keeps the chosen op modules themselves (the supernet's weights after a one-shot search).
    chosen = dict(zip(space.choices(), [m for m in model_space.modules() if isinstance(m, LayerChoice)]))
    blocks = list(child.backbone.encoder) + list(child.backbone.decoder)
    assert all(block is chosen[label][op] for block, (label, op) in zip(blocks, SAMPLE.items()))


def test_an_nni_export_becomes_a_valid_genotype_that_round_trips(tmp_path: Path) -> None:
    space = tiny_space()
    genotype = genotype_from_nni(SAMPLE, space, "vqa", source="nni_arch.json", algorithm="darts")
    space.validate(genotype)
    assert genotype.provenance["strategy"] == "nni" and genotype.provenance["nni_strategy"] == "nni.nas.strategy.DARTS"
    path = save_genotype(genotype, tmp_path / "g.json")
    assert load_genotype(path) == genotype
    # A LayerChoice built from a list exports indices; they name the same ops.
    indices = {label: space.choices()[label].index(op) for label, op in SAMPLE.items()}
    assert genotype_from_nni(indices, space, "vqa", source="x.json").choices == SAMPLE
    # And NNI takes the genotype's choices back as its sample.
    child = frozen_network(NniModelSpace(space, META, Probe()), genotype.choices)
    assert type(child.backbone.decoder[0]).__name__ == "RelationSelfAttention"
    with pytest.raises(UserError, match=r"x.json: 'dec/1': unknown op 'skip'"):
        genotype_from_nni({**SAMPLE, "dec/1": "skip"}, space, "vqa", source="x.json")
    with pytest.raises(UserError, match=r"x.json: missing label\(s\) dec/2"):
        genotype_from_nni({k: v for k, v in SAMPLE.items() if k != "dec/2"}, space, "vqa", source="x.json")


@pytest.mark.parametrize("change, message", [
    ({"normal/op_2_0": "sep_conv_3x3"}, "unknown label 'normal/op_2_0' (value 'sep_conv_3x3')"),
    ({"dec/1": "sep_conv_3x3"}, "'dec/1': unknown op 'sep_conv_3x3'"),
    ({"dec/1": 7}, "'dec/1': unknown op 7"),
])
def test_cli_convert_names_the_file_key_and_value(tmp_path: Path, capsys: pytest.CaptureFixture, change: dict,
                                                  message: str) -> None:
    path = tmp_path / "nni_arch.json"
    path.write_text(json.dumps({**SAMPLE, **change}))
    out = tmp_path / "g.json"
    assert main(["genotype", "convert", "--from-nni", str(path), "--space", "mmnas", "--task", "vqa",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and message in err
    assert not out.exists()


def test_nni_darts_search_writes_a_valid_genotype(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "search"
    assert main(["search", "--task", "vqa", "--strategy", "nni", "--out", str(out), *SMOKE,
                 "strategy.algorithm=darts"]) == 0
    genotype = load_genotype(out / "genotype.json")
    assert main(["genotype", "validate", str(out / "genotype.json")]) == 0
    assert genotype.provenance["nni_algorithm"] == "darts" and genotype.provenance["nni_version"].startswith("3.")
    assert 0 <= genotype.metrics["heldout_accuracy"] <= 100
    # nni_arch.json is NNI's own export; converting it gives the same architecture.
    exported = json.loads((out / "nni_arch.json").read_text())
    assert exported == genotype.choices
    converted = tmp_path / "converted.json"
    assert main(["genotype", "convert", "--from-nni", str(out / "nni_arch.json"), "--task", "vqa",
                 "--algorithm", "darts", "--out", str(converted)]) == 0
    assert load_genotype(converted).choices == genotype.choices
    assert f"genotype: {out / 'genotype.json'}" in capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["darts", "gumbel", "proxyless", "random"])
def test_every_nni_one_shot_strategy_searches_the_space_reproducibly(tmp_path: Path, algorithm: str) -> None:
    runs = []
    for name in ("first", "second"):  # the same seed twice: the same architecture and probabilities
        out = tmp_path / algorithm / name
        # One epoch with architecture steps from the first batch on (smoke.yaml waits one epoch).
        assert main(["search", "--task", "vqa", "--strategy", "nni", "--out", str(out), *SMOKE, "train.epochs=1",
                     "--seed", "3", "strategy.arch_start_epoch=0", "strategy.arch_lr=0.05",
                     f"strategy.algorithm={algorithm}"]) == 0
        runs.append(out)
    first, second = (load_genotype(out / "genotype.json") for out in runs)
    assert first.provenance["nni_algorithm"] == algorithm
    assert first.choices == second.choices
    if algorithm == "random":  # RandomOneShot has no architecture parameters (and exports an arbitrary subnet)
        # Its training paths come from unseeded numpy RandomStates inside NNI, so only the exported
        # architecture (drawn from --seed by vlnas) repeats, not the supernet's weights or score.
        assert not (out / "nni_probabilities.json").exists()
        return
    assert first.metrics == second.metrics
    probabilities = json.loads((out / "nni_probabilities.json").read_text())
    assert probabilities == json.loads((runs[0] / "nni_probabilities.json").read_text())
    assert list(probabilities) == list(load_genotype(out / "genotype.json").choices)
    # The architecture steps moved alpha away from NNI's near-uniform start (randn * 1e-3).
    assert max(abs(p - 1 / len(dist)) for dist in probabilities.values() for p in dist.values()) > 0.01


def test_nni_settings_are_checked_before_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "never"
    assert main(["search", "--task", "vqa", "--strategy", "nni", "--out", str(out), *SMOKE,
                 "strategy.algorithm=enas"]) == 2
    err = capsys.readouterr().err
    assert "strategy.algorithm: unknown value 'enas'. Valid: darts, gumbel, proxyless, random" in err
    assert main(["search", "--task", "vqa", "--strategy", "nni", "--out", str(out), *SMOKE, "--nproc", "2"]) == 2
    assert not out.exists()


@pytest.mark.parametrize("task", ["vgd", "itm"])
def test_nni_darts_searches_grounding_and_matching(task: str, tmp_path: Path) -> None:
    out = tmp_path / task
    assert main(["search", "--task", task, "--strategy", "nni", "--out", str(out), *SMOKE, "train.epochs=1",
                 "strategy.algorithm=darts"]) == 0
    genotype = load_genotype(out / "genotype.json")
    assert genotype.task == task and genotype.provenance["nni_algorithm"] == "darts"
    assert main(["genotype", "validate", str(out / "genotype.json")]) == 0
