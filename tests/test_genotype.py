import json
from pathlib import Path

import pytest
import torch

from nas.convert import convert_mmnas_arch
from nas.errors import UserError
from nas.genotype import Genotype, diff_genotypes, load_genotype, save_genotype
from nas.space import fixed_block_factory
from nas.task import TaskMeta
from search_spaces.mmnas import MmnasConfig, MmnasSpace
from tests.conftest import REPO

# The mmnas space's genotypes; other spaces test theirs (tests/search_spaces/test_lxmert.py: lxr955).
SHIPPED = [path for path in sorted((REPO / "genotypes").glob("*.json"))
           if json.loads(path.read_text())["space"] == "mmnas"]


def small_space(enc: int = 12, dec: int = 18) -> MmnasSpace:
    return MmnasSpace(MmnasConfig(hidden=32, head_dim=16, relation_dim=8, enc_blocks=enc, dec_blocks=dec))


def test_round_trip(tmp_path: Path) -> None:
    genotype = Genotype(space="mmnas", task="vqa", choices=small_space(2, 3).prior(),
                        provenance={"seed": 1}, metrics={"heldout_accuracy": 50.0})
    path = save_genotype(genotype, tmp_path / "g.json")
    assert load_genotype(path) == genotype
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_genotypes_validate_and_build(path: Path) -> None:
    genotype = load_genotype(path)
    depth = MmnasSpace.config_from_choices(genotype.choices)  # published layouts 12 / 18; mmnas_prior_small 4 / 6
    space = small_space(depth["enc_blocks"], depth["dec_blocks"])
    space.validate(genotype, str(path))
    head = torch.nn.Identity()
    model = space.build_model(TaskMeta(vocab_size=20, feature_dim=8, num_outputs=3), head,
                              fixed_block_factory(genotype.choices))
    # The child holds exactly one op per block, of the chosen type.
    ops = [type(block).__name__ for block in [*model.backbone.encoder, *model.backbone.decoder]]
    assert len(ops) == len(genotype.choices) and "GatedMixedOp" not in ops


def test_the_small_prior_genotype_is_the_spaces_prior_at_the_quick_start_depth() -> None:
    genotype = load_genotype(REPO / "genotypes" / "mmnas_prior_small.json")
    assert genotype.choices == small_space(4, 6).prior()


def test_published_vqa_genotype_matches_the_paper_layout() -> None:
    genotype = load_genotype(REPO / "genotypes" / "mmnas_vqa.json")
    assert small_space().describe(genotype.choices) == (
        "encoder: SAx4 FFNx4 SA FFNx3 | decoder: GAx2 FFNx2 GA FFN RSA GA FFN GA RSA FFN RSA SA FFN RSA GA FFN")


def test_convert_matches_the_original_file(tmp_path: Path) -> None:
    original = {"epoch0": {"enc": [["self_att_64"], ["feed_forward"]],
                           "dec": [["rel_self_att_64"], ["guided_att_64"], ["feed_forward"]]},
                "epoch3": {"enc": [["feed_forward"], ["feed_forward"]],
                           "dec": [["guided_att_64"], ["guided_att_64"], ["self_att_64"]]}}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(original))
    last = convert_mmnas_arch(path, task="vqa")
    assert last.provenance["source_epoch"] == 3
    assert last.choices == {"enc/0": "feed_forward", "enc/1": "feed_forward", "dec/0": "guided_att",
                            "dec/1": "guided_att", "dec/2": "self_att"}
    first = convert_mmnas_arch(path, task="vqa", epoch=0)
    assert [op for _, op in sorted(first.choices.items()) if _.startswith("dec")] == [
        "rel_self_att", "guided_att", "feed_forward"]
    with pytest.raises(UserError, match="no epoch7. Available: epoch0, epoch3"):
        convert_mmnas_arch(path, task="vqa", epoch=7)
    path.write_text(json.dumps({"epoch0": {"enc": [["self_att_64", "feed_forward"]], "dec": []}}))
    with pytest.raises(UserError, match=r"epoch0.enc\[0\] must list exactly one op"):
        convert_mmnas_arch(path, task="vqa")


def _write(tmp_path: Path, **changes) -> Path:
    data = Genotype(space="mmnas", task="vqa", choices=small_space(2, 3).prior()).to_dict()
    data.update(changes)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    return path


def test_validation_errors_are_specific(tmp_path: Path) -> None:
    space = small_space(2, 3)
    with pytest.raises(UserError, match="unknown genotype version 2; this vlnas reads version 1"):
        load_genotype(_write(tmp_path, version=2))
    with pytest.raises(UserError, match="'format' is None"):
        load_genotype(_write(tmp_path, format=None))
    with pytest.raises(UserError, match="unknown key"):
        load_genotype(_write(tmp_path, extra=1))
    choices = dict(space.prior())
    choices["dec/1"] = "conv_3x3"
    with pytest.raises(UserError, match="unknown op 'conv_3x3' for dec/1. Valid ops: self_att, rel_self_att"):
        space.validate(load_genotype(_write(tmp_path, choices=choices)))
    choices = dict(space.prior())
    del choices["enc/1"]
    choices["dec/9"] = "feed_forward"
    with pytest.raises(UserError, match=r"missing label\(s\) enc/1; unexpected label\(s\) dec/9. "
                                        r"Expected labels: enc/0..1, dec/0..2"):
        space.validate(load_genotype(_write(tmp_path, choices=choices)))
    with pytest.raises(UserError, match="genotype is for search space 'darts'"):
        space.validate(load_genotype(_write(tmp_path, space="darts")))
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        load_genotype(path)


def test_diff_lists_changed_labels() -> None:
    a = load_genotype(REPO / "genotypes" / "mcan.json")
    b = load_genotype(REPO / "genotypes" / "mmnas_vqa.json")
    rows = diff_genotypes(a, b)
    assert len(rows) == sum(a.choices[k] != b.choices[k] for k in a.choices)
    assert ("enc/1", "feed_forward", "self_att") in rows
    assert diff_genotypes(a, a) == []
