from pathlib import Path

import pytest

from nas.config import Layer, TrainConfig, config_hash, find_experiment, overrides_layer, resolve_config, yaml_layer
from nas.errors import UserError

BASE = Layer("defaults", {"task": {"name": "vqa"}, "space": {"name": "mmnas"}, "strategy": {"name": "mmnas"}})


def test_layers_apply_in_order_and_coerce_types(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("train:\n  epochs: 5\n  lr: 1e-4\nspace:\n  hidden: 128\n")
    config = resolve_config([BASE, yaml_layer(experiment),
                             overrides_layer(["train.epochs=3", "train.decay_epochs=4,6", "seed=7"])])
    assert config.train.epochs == 3  # the command line wins over the file
    assert config.train.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string; coerced to float
    assert config.train.decay_epochs == [4, 6]
    assert config.space.hidden == 128 and config.space.enc_blocks == 12  # untouched default
    assert config.seed == 7
    assert config.task.name == "vqa" and config.strategy.name == "mmnas"


def test_unknown_key_names_the_source_and_lists_valid_keys(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("train:\n  epoch: 5\n")
    with pytest.raises(UserError) as error:
        resolve_config([BASE, yaml_layer(experiment)])
    message = str(error.value)
    assert str(experiment) in message and "train.epoch" in message and "epochs" in message


def test_unknown_section_and_wrong_type_are_errors() -> None:
    with pytest.raises(UserError, match="unknown section 'trian'"):
        resolve_config([BASE, overrides_layer(["trian.epochs=3"])])
    with pytest.raises(UserError, match=r"command line: train.epochs must be an integer, got 'three'"):
        resolve_config([BASE, overrides_layer(["train.epochs=three"])])
    with pytest.raises(UserError, match="not of the form"):
        overrides_layer(["train.epochs"])


def test_unknown_component_lists_available() -> None:
    with pytest.raises(UserError, match=r"unknown task 'vqa2'. Available: .*vqa"):
        resolve_config([BASE, overrides_layer(["task.name=vqa2"])])


def test_bad_yaml_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match=r"broken.yaml: not valid YAML \(line"):
        yaml_layer(broken)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="unsafe.yaml"):  # the safe loader refuses python tags
        yaml_layer(unsafe)


def test_config_hash_tracks_values() -> None:
    a = resolve_config([BASE])
    b = resolve_config([BASE, overrides_layer(["train.epochs=2"])])
    assert config_hash(a) == config_hash(resolve_config([BASE])) != config_hash(b)
    assert isinstance(a.train, TrainConfig)


def test_find_experiment_by_name() -> None:
    assert find_experiment("smoke").name == "smoke.yaml"
    with pytest.raises(UserError, match="Built-in: .*smoke"):
        find_experiment("no-such-experiment")


@pytest.mark.parametrize("task", ["vqa", "vgd", "itm"])
def test_small_and_large_presets_carry_the_openvqa_sizes(task: str) -> None:
    from search_spaces.mmnas.ops import OpSizes, make_op

    base = Layer("defaults", {"task": {"name": task}, "space": {"name": "mmnas"}, "strategy": {"name": "mmnas"}})
    small = resolve_config([base, yaml_layer(find_experiment("small"))])
    large = resolve_config([base, yaml_layer(find_experiment("large"))])
    assert (small.space.hidden, small.space.head_dim, small.task.flat_mlp, small.train.lr) == (512, 64, 512, 1.2e-4)
    assert (large.space.hidden, large.space.head_dim, large.task.flat_mlp, large.train.lr) == (1024, 128, 1024, 7e-5)
    for config in (small, large):  # 8 heads in every attention op, relation attention included
        sizes = OpSizes(hidden=config.space.hidden, head_dim=config.space.head_dim, ffn_mult=config.space.ffn_mult,
                        dropout=0.0, relation_dim=config.space.relation_dim)
        for op in ("self_att", "rel_self_att", "guided_att"):
            attention = next(m for m in make_op(op, sizes).modules() if hasattr(m, "heads"))
            assert (attention.heads, attention.head_dim) == (8, config.space.hidden // 8)
