"""Arguments and config layering shared by ``nas search`` and ``nas retrain``."""

from __future__ import annotations

import argparse
from typing import Any

from pathlib import Path

from nas.config import Layer, find_experiment, overrides_layer, yaml_layer
from nas.errors import UserError

__all__ = ["add_run_arguments", "config_layers", "resume_layers"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="experiment YAML layered over the defaults; a bare name means experiments/NAME.yaml "
                             "(e.g. --config smoke). May repeat; later files win.")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (sets task.data_dir); "
                        "without it the built-in generated dataset is used")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<command>-<task>-<time>)")
    parser.add_argument("--seed", type=int, help="random seed (default 888, MmNas's)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied last, e.g. train.epochs=3 space.hidden=128")


def config_layers(args: argparse.Namespace, defaults: dict[str, Any], after_files: Layer | None = None
                  ) -> list[Layer]:
    """defaults < experiment files < ``after_files`` < flags < dotted overrides."""
    layers = [Layer("defaults", defaults)]
    layers += [yaml_layer(find_experiment(name)) for name in args.config]
    if after_files is not None:
        layers.append(after_files)
    flags: dict[str, Any] = {}
    for flag, (section, key) in {"task": ("task", "name"), "space": ("space", "name"),
                                 "strategy": ("strategy", "name"), "data": ("task", "data_dir")}.items():
        value = getattr(args, flag, None)
        if value is not None:
            flags.setdefault(section, {})[key] = value
    if args.seed is not None:
        flags["seed"] = args.seed
    layers.append(Layer("command-line flags", flags))
    layers.append(overrides_layer(args.overrides))
    return layers


def resume_layers(args: argparse.Namespace, command: str) -> list[Layer]:
    """The saved ``config.yaml`` of the run in ``--out``, under this call's flags and overrides."""
    if args.out is None:
        raise UserError("--resume needs --out, the run directory to continue")
    saved = Path(args.out) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{saved}: not found; --resume continues a run directory made by 'nas {command}'")
    return [yaml_layer(saved), *config_layers(args, {})[1:]]
