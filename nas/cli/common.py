"""Arguments, config layering, resuming and process launch shared by ``nas search`` and ``nas retrain``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from nas.config import Layer, RunConfig, config_to_dict, find_experiment, overrides_layer, yaml_layer
from nas.distributed import SINGLE, close_world, launch, world_from_env
from nas.errors import UserError
from nas.registry import SPACES, STRATEGIES
from nas.run import setup_logging

__all__ = ["add_run_arguments", "config_layers", "resume_dir", "resume_layers", "should_resume", "run_on_ranks",
           "without_other_strategies_keys", "without_other_spaces_keys"]

log = logging.getLogger("nas")

TINY_IMAGES = 512  # --tiny and --fast: LXMERT's subset sizes
FAST_IMAGES = 4096


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="experiment YAML layered over the defaults; a bare name means experiments/NAME.yaml "
                             "(e.g. --config smoke). May repeat; later files win.")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (sets task.data_dir); "
                        "without it the built-in generated dataset is used")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<command>-<task>-<time>)")
    parser.add_argument("--seed", type=int, help="random seed (default 888, MmNas's)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with its saved config "
                             "(a run whose --out already has a checkpoint and the same config resumes by itself)")
    parser.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                        help="data-parallel processes on this machine (gloo on CPU, NCCL on GPUs; default 1). "
                             "Under torchrun, leave it at 1: the ranks come from torchrun")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    # LXMERT's --tiny / --fast: the same run on a subset, to try a setup out before the full data.
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--tiny", dest="max_images", action="store_const", const=TINY_IMAGES,
                        help=f"use only the first {TINY_IMAGES} images of each split and their questions, "
                             f"expressions or captions (sets task.max_images={TINY_IMAGES})")
    subset.add_argument("--fast", dest="max_images", action="store_const", const=FAST_IMAGES,
                        help=f"use only the first {FAST_IMAGES} images of each split (sets "
                             f"task.max_images={FAST_IMAGES})")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied last, e.g. train.epochs=3 space.hidden=128")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    if getattr(args, "max_images", None) is not None:  # --tiny / --fast
        flags.setdefault("task", {})["max_images"] = args.max_images
    layers.append(Layer("command-line flags", flags))
    layers.append(overrides_layer(args.overrides))
    return without_other_spaces_keys(layers)


def resume_dir(args: argparse.Namespace) -> Path:
    """The run directory ``--resume`` continues: ``--out``, which it needs."""
    if args.out is None:
        raise UserError("--resume needs --out, the run directory to continue")
    return Path(args.out)


def resume_layers(args: argparse.Namespace, command: str) -> list[Layer]:
    """The saved ``config.yaml`` of the run in ``--out``, under this call's flags and overrides."""
    saved = resume_dir(args) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{saved}: not found; --resume continues a run directory made by 'nas {command}'")
    return without_other_spaces_keys([yaml_layer(saved), *config_layers(args, {})[1:]])


def should_resume(args: argparse.Namespace, config: RunConfig, checkpoint: Path) -> bool:
    """``--resume``, or an ``--out`` that already holds this run's checkpoint (same config, save
    ``train.epochs``). A checkpoint of a different config is an error, never silently replaced."""
    if args.resume or args.out is None or not checkpoint.is_file():
        return args.resume
    saved_path = Path(args.out) / "config.yaml"
    saved = dict(yaml_layer(saved_path).values) if saved_path.is_file() else None  # a broken file: one line
    differences = _differences(saved or {}, config_to_dict(config))
    differences = [key for key in differences if key != "train.epochs"]
    if differences:
        shown = ", ".join(differences[:4]) + (", ..." if len(differences) > 4 else "")
        raise UserError(f"{args.out}: already holds a run with another config (differs in {shown}); "
                        "continue it with --resume, or pick a new --out")
    log.info("%s holds a checkpoint of this run: resuming it (use a new --out to start over)", checkpoint)
    return True


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    found = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found


def without_other_strategies_keys(files: list[Layer], strategy: str | None) -> tuple[list[Layer], list[str]]:
    """Experiment files may tune several strategies (smoke.yaml sets mmnas's warm-up): drop the
    ``strategy.*`` keys that only other registered strategies declare, so ``--strategy optuna
    --config smoke`` works. Keys no strategy declares, and command-line overrides, still fail."""
    return _without_foreign_keys(files, "strategy", STRATEGIES, strategy)


def without_other_spaces_keys(layers: list[Layer]) -> list[Layer]:
    """Experiment files may size several spaces (smoke.yaml sets mmnas's block counts): drop the
    ``space.*`` keys that only other registered spaces declare, so ``--space lxmert --config smoke``
    works. Keys no space declares, and dotted command-line overrides, still fail."""
    name = None
    for layer in layers:
        section = layer.values.get("space")
        if isinstance(section, dict) and isinstance(section.get("name"), str):
            name = section["name"]
    return [layer if layer.source == "command line" else
            _without_foreign_keys([layer], "space", SPACES, name)[0][0] for layer in layers]


def _without_foreign_keys(layers: list[Layer], section: str, registry: Any,
                          name: str | None) -> tuple[list[Layer], list[str]]:
    """``layers`` without the ``section`` keys that only registered components other than ``name``
    declare in their Config, and those keys as ``section.key (source)``."""
    if name is None or name not in registry:
        return layers, []
    own = {f.name for f in dataclasses.fields(registry.get(name).Config)}
    others = {f.name for other in registry.names() if other != name
              for f in dataclasses.fields(registry.get(other).Config)}
    kept, dropped = [], []
    for layer in layers:
        values = layer.values.get(section)
        if not isinstance(values, dict):
            kept.append(layer)
            continue
        foreign = [key for key in values if key not in own and key in others]
        dropped += [f"{section}.{key} ({layer.source})" for key in foreign]
        kept.append(Layer(layer.source,
                          {**layer.values, section: {k: v for k, v in values.items() if k not in foreign}}))
    return kept, dropped


def run_on_ranks(nproc: int, run_dir: Path, quiet: bool, work: Callable[..., None], *payload: Any) -> None:
    """Call ``work(*payload, world)`` in one process, in ``nproc`` spawned ones, or as this
    torchrun rank. ``work`` must be a module-level function (spawned processes import it)."""
    outer = world_from_env()
    if nproc > 1 and outer.distributed:
        raise UserError("--nproc with torchrun: torchrun already started the ranks; drop --nproc")
    if nproc > 1:
        launch(nproc, _rank_entry, run_dir, quiet, work, payload)
        return
    _rank_entry(run_dir, quiet, work, payload)


def _rank_entry(run_dir: Path, quiet: bool, work: Callable[..., None], payload: tuple) -> None:
    world = world_from_env()
    # Only rank 0 writes the log file and talks; the others report warnings and errors.
    setup_logging(run_dir if world.is_main else None, quiet or not world.is_main)
    try:
        work(*payload, world)
    finally:
        if world is not SINGLE:
            close_world()
