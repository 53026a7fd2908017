"""``nas genotype show|validate|diff|convert``."""

from __future__ import annotations

import argparse
import json

from nas.config import Layer, overrides_layer, resolve_config
from nas.convert import convert_mmnas_arch
from nas.errors import UserError
from nas.genotype import Genotype, diff_genotypes, load_genotype, save_genotype
from nas.interop.nni_genotype import NNI_STRATEGIES, genotype_from_nni, read_nni_arch
from nas.registry import SPACES, TASKS
from nas.space import SearchSpace


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("genotype", help="show, validate, diff or convert genotype JSON files",
                                   description="Inspect and convert genotype JSON files (format vlnas-genotype, "
                                               "version 1).")
    commands = parser.add_subparsers(dest="genotype_command", metavar="COMMAND", required=True)

    show = commands.add_parser("show", help="print a genotype's architecture, provenance and metrics")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print the validated JSON")
    show.set_defaults(handler=show_genotype)

    validate = commands.add_parser(
        "validate", help="check a genotype against its search space",
        description="Check a genotype against its search space: known space and version, every label present "
                    "once, every op valid. Depth comes from the genotype unless overridden, e.g. "
                    "space.enc_blocks=12 space.dec_blocks=18.")
    validate.add_argument("file")
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="space settings to check against")
    validate.set_defaults(handler=validate_genotype)

    diff = commands.add_parser("diff", help="list the blocks whose op differs between two genotypes")
    diff.add_argument("first")
    diff.add_argument("second")
    diff.set_defaults(handler=diff_command)

    convert = commands.add_parser("convert", help="import MmNas's arch JSON or NNI's exported choice dict as a "
                                                  "version-1 genotype",
                                  description="Convert MmNas's arch file ({\"epochN\": {\"enc\": [[op], ...], "
                                              "\"dec\": [...]}}), or with --from-nni an NNI 3.0 export "
                                              "({\"label\": \"op\"}, e.g. nni_arch.json of 'nas search --strategy "
                                              "nni'), into a version-1 genotype. Reading an NNI export needs no NNI.")
    convert.add_argument("file", nargs="?", help="MmNas arch JSON (e.g. arch/mmnas_vqa.json)")
    convert.add_argument("--from-nni", metavar="FILE", help="NNI export to convert instead: {label: op name or "
                         "candidate index}, as strategy.list_models() / export_top_models(formatter='dict') give it")
    convert.add_argument("--space", default="mmnas", help="search space of the NNI export (default mmnas)")
    convert.add_argument("--algorithm", choices=sorted(NNI_STRATEGIES),
                         help="the NNI strategy that found it, recorded in the provenance (default: unknown)")
    convert.add_argument("--out", required=True, help="genotype JSON to write")
    convert.add_argument("--task", required=True, help="task the architecture was searched for (vqa, vgd, itm...)")
    convert.add_argument("--from", dest="source_format", default="mmnas", choices=["mmnas"],
                         help="input format (default mmnas)")
    convert.add_argument("--epoch", type=int, help="which epochN to take (default: the last)")
    convert.set_defaults(handler=convert_command)


def _validated_space(genotype: Genotype, source: str, overrides: list[str] | None = None) -> SearchSpace:
    """The genotype's space, at the genotype's depth unless overridden, after validating the genotype."""
    space = _space_at_depth(genotype.space, genotype.choices, source, overrides)
    space.validate(genotype, source)
    return space


def _space_at_depth(name: str, choices: dict, source: str, overrides: list[str] | None = None) -> SearchSpace:
    """Space ``name`` at the depth its labels in ``choices`` imply, unless overridden."""
    space_cls = SPACES.get(name)
    layers = [Layer("defaults", {"task": {"name": _any_task()}, "strategy": {"name": "mmnas"},
                                 "space": {"name": name}}),
              Layer(f"{source} (depth)", {"space": space_cls.config_from_choices(choices)}),
              overrides_layer(overrides or [])]
    config = resolve_config(layers).space
    try:
        return space_cls(config)
    except UserError as error:  # e.g. a depth of 0: the labels of this file implied it
        raise UserError(f"{source}: {error}") from None


def _checked(path: str, overrides: list[str] | None = None) -> tuple[Genotype, SearchSpace]:
    genotype = load_genotype(path)
    return genotype, _validated_space(genotype, path, overrides)


def _any_task() -> str:
    return TASKS.names()[0]


def show_genotype(args: argparse.Namespace) -> int:
    genotype, space = _checked(args.file)
    if args.json:
        print(json.dumps(genotype.to_dict(), indent=2))
        return 0
    print(f"{args.file}: space {genotype.space}, task {genotype.task}")
    print(f"  {space.describe(genotype.choices)}")
    for key, value in genotype.provenance.items():
        print(f"  provenance.{key}: {value}")
    for key, value in genotype.metrics.items():
        print(f"  metrics.{key}: {value}")
    for label, op in genotype.choices.items():
        print(f"  {label:<8} {op}")
    return 0


def validate_genotype(args: argparse.Namespace) -> int:
    genotype, space = _checked(args.file, args.overrides)
    print(f"{args.file}: valid {genotype.space} genotype for task {genotype.task} ({len(genotype.choices)} blocks)")
    return 0


def diff_command(args: argparse.Namespace) -> int:
    first, _ = _checked(args.first)
    second, _ = _checked(args.second)
    rows = diff_genotypes(first, second)
    if first.space != second.space:
        print(f"spaces differ: {first.space} vs {second.space}")
    if not rows:
        print("identical architectures")
        return 0
    print(f"{len(rows)} of {len(set(first.choices) | set(second.choices))} blocks differ:")
    for label, a, b in rows:
        print(f"  {label:<8} {a or '-':<14} -> {b or '-'}")
    return 0


def convert_command(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.from_nni is None):
        raise UserError("nas genotype convert: give either an MmNas arch FILE or --from-nni FILE, not "
                        f"{'both' if args.file else 'neither'}")
    if args.from_nni is not None:
        return _convert_nni(args)
    genotype = convert_mmnas_arch(args.file, task=args.task, epoch=args.epoch)
    _validated_space(genotype, args.file)
    save_genotype(genotype, args.out)
    print(f"wrote {args.out} ({len(genotype.choices)} blocks, from epoch{genotype.provenance['source_epoch']})")
    return 0


def _convert_nni(args: argparse.Namespace) -> int:
    sample = read_nni_arch(args.from_nni)
    space = _space_at_depth(args.space, sample, args.from_nni)
    genotype = genotype_from_nni(sample, space, args.task, source=args.from_nni, algorithm=args.algorithm)
    save_genotype(genotype, args.out)
    print(f"wrote {args.out} ({len(genotype.choices)} blocks, from NNI export {args.from_nni})")
    return 0
