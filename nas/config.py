"""Layered configuration: component defaults < command defaults < YAML < CLI.

Every component (task, search space, strategy, the training loop) declares its
settings as a dataclass. A run's configuration is those dataclasses filled from
layers of plain mappings: the command's own defaults, then each YAML file given
with ``--config``, then dotted ``key=value`` overrides from the command line.
A key that no dataclass declares is an error naming the layer it came from and
listing the valid keys; a value of the wrong type is an error naming the layer,
key and value. YAML is always read with the safe loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import UserError, shown
from nas.registry import SPACES, STRATEGIES, TASKS

__all__ = ["flatten_dict", 
    "TrainConfig",
    "RunConfig",
    "Layer",
    "yaml_layer",
    "overrides_layer",
    "resolve_config",
    "config_to_dict",
    "config_hash",
    "find_experiment",
    "check_section",
]

# The sections whose schema depends on a registered component's name.
_COMPONENT_SECTIONS = {"task": TASKS, "space": SPACES, "strategy": STRATEGIES}


@dataclass
class TrainConfig:
    """The shared training loop: used for the weight steps of a search and for retraining."""

    epochs: int = 13
    batch_size: int = 64
    lr: float = 1.2e-4
    warmup_epochs: int = 3  # linear warm-up: lr * k/(warmup+1) in epoch k (MmNas: 1/4, 2/4, 3/4)
    decay_epochs: list[int] = field(default_factory=lambda: [10, 12])
    decay_rate: float = 0.2
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    weight_decay: float = 0.0
    schedule: str = "step"  # step: x decay_rate after each decay_epochs entry (MmNas) | cosine: to 0 after warm-up
    accumulate: int = 1  # micro-batches per optimizer step; the step sees batch_size * accumulate * ranks samples
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (CUDA, loss scaling)
    ema_decay: float = 0.0  # 0: off; e.g. 0.999: the averaged weights are evaluated, kept as best and submitted
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0: at the end of each epoch only
    # torch.compile the training forward of a retrain: off | default | reduce-overhead (CUDA graphs) |
    # max-autotune. The first steps pay the compile (minutes on CPU); searches always run uncompiled.
    compile: str = "off"
    # Batch samples of similar region counts together (a batch is as wide as its most regions): faster
    # on features with 10-100 boxes, the same samples per epoch in another grouping.
    group_by_length: bool = False
    eval_batch_size: int = 256
    num_workers: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # A checkpoint (e.g. runs/pt/checkpoints/best.pt of nas pretrain) of the same genotype and space settings:
    # a new retrain starts from its embedding, backbone and head pooling weights (word rows matched by token).
    init: str | None = None


@dataclass
class RunConfig:
    """A fully resolved run: one dataclass per section."""

    seed: int
    task: Any
    space: Any
    strategy: Any
    train: TrainConfig


@dataclass(frozen=True)
class Layer:
    """One source of settings, named so errors can point at it."""

    source: str  # e.g. "experiments/smoke.yaml" or "command line"
    values: Mapping[str, Any]


def yaml_layer(path: str | Path) -> Layer:
    """Read a YAML experiment file (safe loader) as a layer."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a UTF-8 text file (bad byte at offset {error.start})") from None
    except RecursionError:  # "[[[[..." deeper than the parser's recursion allows
        raise UserError(f"{path}: nested too deeply to be a config file") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise UserError(f"{path}: holds a value YAML cannot read ({str(error).split(';')[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file must hold a mapping of sections, got {type(values).__name__}")
    return Layer(str(path), values)


def overrides_layer(pairs: list[str], source: str = "command line") -> Layer:
    """Turn ``["train.epochs=3", "space.hidden=128"]`` into a nested layer."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{source}: override '{pair}' is not of the form section.key=value")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{source}: override '{pair}' conflicts with an earlier override of '{part}'")
        node[leaf] = _parse_scalar(raw)
    return Layer(source, values)


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError, ValueError):
        return raw  # not YAML (or too deep, or a 5000-digit number): the schema check names the key


def resolve_config(layers: list[Layer], *, sections: tuple[str, ...] = ("task", "space", "strategy")) -> RunConfig:
    """Merge layers (later wins) into a validated :class:`RunConfig`."""
    names = {section: _component_name(layers, section) for section in sections}
    schemas: dict[str, type] = {"train": TrainConfig}
    for section, name in names.items():
        component = _COMPONENT_SECTIONS[section].get(name)
        schemas[section] = component.Config
    merged: dict[str, dict[str, Any]] = {section: {} for section in schemas}
    seed = 888
    for layer in layers:
        for key, value in layer.values.items():
            if key == "seed":
                seed = _coerce(value, int, layer.source, "seed")
                continue
            if key not in schemas:
                valid = ", ".join(["seed", *sorted(schemas)])
                raise UserError(f"{layer.source}: unknown section '{key}'. Valid sections: {valid}")
            if not isinstance(value, dict):
                raise UserError(f"{layer.source}: '{key}' must be a mapping of settings, got {shown(value)}")
            merged[key].update(check_section(value, schemas[key], key, layer.source))
    # Each component's Config has a ``name`` field, so the chosen names land in it.
    built = {section: schemas[section](**values) for section, values in merged.items()}
    return RunConfig(seed=seed, task=built["task"], space=built["space"],
                     strategy=built.get("strategy"), train=built["train"])


def _component_name(layers: list[Layer], section: str) -> str:
    name = None
    for layer in layers:
        value = layer.values.get(section)
        if isinstance(value, dict) and "name" in value:
            name = value["name"]
            if not isinstance(name, str):
                raise UserError(f"{layer.source}: {section}.name must be a string, got {shown(name)}")
    if name is None:
        registry = _COMPONENT_SECTIONS[section]
        raise UserError(f"no {section}.name given. Available: {', '.join(registry.names())}")
    return name


def check_section(values: Mapping[str, Any], schema: type, section: str, source: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    checked = {}
    for key, value in values.items():
        dotted = f"{section}.{key}" if section else key
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise UserError(f"{source}: unknown key '{dotted}'. Valid keys: {valid}")
        checked[key] = _coerce(value, hints[key], source, dotted)
    return checked


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check ``value`` against a type hint, converting where the meaning is unambiguous."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, source, key)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [part for part in value.replace("[", "").replace("]", "").split(",") if part.strip()]
            value = [_parse_scalar(part.strip()) for part in value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {shown(value)}")
        return [_coerce(item, item_hint, source, key) for item in value]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise UserError(f"{source}: {key} must be true or false, got {shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{source}: {key} must be an integer, got {shown(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        raise UserError(f"{source}: {key} must be a number, got {shown(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{source}: {key} must be a string, got {shown(value)}")
    return value


def flatten_dict(tree: Mapping[str, Any], separator: str = ".", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (or ``a/b`` for Ray's nesting)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, separator, f"{prefix}{key}{separator}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict of a resolved config (as saved in ``config.yaml``)."""
    result: dict[str, Any] = {"seed": config.seed}
    for section in ("task", "space", "strategy", "train"):
        value = getattr(config, section)
        if value is not None:
            result[section] = dataclasses.asdict(value)
    return result


def config_hash(config: RunConfig) -> str:
    """A stable hash of the resolved config, recorded in genotype provenance."""
    canonical = json.dumps(config_to_dict(config), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def find_experiment(name_or_path: str) -> Path:
    """Resolve ``--config smoke`` to ``experiments/smoke.yaml``; paths pass through."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    for root in _experiment_roots():
        candidate = root / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    available = sorted({p.stem for root in _experiment_roots() for p in root.glob("*.yaml")})
    raise UserError(f"no experiment config '{name_or_path}'. Built-in: {', '.join(available) or 'none'}")


def _experiment_roots() -> list[Path]:
    from nas.resources import resource_dir

    root = resource_dir("experiments")
    return [root] if root is not None else []
