"""``nas data synth``: write the built-in generated dataset in the released formats."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nas.config import check_section, overrides_layer

HELP = """Generate the built-in CLEVR-like VQA dataset in the real VQA v2 formats.

Writes vqa/ (questions and annotations JSON with every official key),
coco_extract/<split>/ (one bottom-up .npz per image) and synth_meta.json.
Generation is deterministic for a seed and atomic (nothing half-written).
Use the result with --data DIR (or task.data_dir=DIR).

Generator settings are KEY=VALUE pairs, e.g.:
  nas data synth --out data/vqa-synth train_images=500 feature_dim=2048
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="built-in datasets", description="Built-in datasets.")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser("synth", help="generate the built-in dataset", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--task", default="vqa", choices=["vqa"], help="dataset format to write (default vqa)")
    synth.add_argument("--out", default="data/vqa-synth", help="output folder (default data/vqa-synth)")
    synth.add_argument("--seed", type=int, help="generator seed (default 0)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="generator settings (see list below)")
    synth.set_defaults(handler=run)
    from nas.synth import SynthVqaConfig

    synth.epilog = "generator settings: " + ", ".join(
        f"{f.name}={f.default}" for f in dataclasses.fields(SynthVqaConfig))


def run(args: argparse.Namespace) -> int:
    from nas.synth import SynthVqaConfig, generate_vqa

    values = check_section(overrides_layer(args.settings).values, SynthVqaConfig, "", "command line")
    if args.seed is not None:
        values["seed"] = args.seed
    config = SynthVqaConfig(**values)
    summary = generate_vqa(Path(args.out), config, progress=not args.quiet)
    print(f"built-in VQA dataset in {summary.root}")
    for split, count in summary.num_questions.items():
        print(f"  {split:<6} {summary.num_images[split]:>6} images {count:>7} questions")
    print(f"use it with: nas search --task vqa --data {summary.root}")
    return 0
