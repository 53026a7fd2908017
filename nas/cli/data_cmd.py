"""``nas data synth``: write the built-in generated datasets in the released formats."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable

from nas.config import check_section, overrides_layer

HELP = """Generate a built-in dataset (a CLEVR-like world) in a task's released formats:

  vqa  VQA v2 questions/annotations JSON + one bottom-up .npz per image (MCAN layout)
  vgd  RefCOCO refs(unc).p + instances.json, SimREC anns/refcoco.json, candidate-box .npz
  itm  SCAN f30k_precomp: {split}_ims.npy, {split}_caps.txt (5 per image), {split}_ids.txt
  gqa  GQA questions/{train,val,testdev}_balanced_questions.json (programs, types, entailed)
       + LXMERT vg_gqa_imgfeat/{vg_gqa,gqa_testdev}_obj36.tsv region features
  pretrain  LXMERT's pre-training corpus lxmert/{mscoco_train,mscoco_minival}.json (captions,
       questions with answers) + mscoco_imgfeat/{train,val}2014_obj36.tsv with object/attribute ids
  nlvr2  NLVR2 data/{train,dev,test1}.json (JSON lines, statements about image pairs)
       + LXMERT nlvr2_imgfeat/{train,valid,test}_obj36.tsv region features
  clevr_ref  CLEVR-Ref+ scenes/ (object masks as RLE) and refexps/ (programs) JSON for train
       and val, IEP features/{split}_features.h5 grid features, {split}_refexps.h5 and vocab.json
  caption  the vqa dataset plus COCO captions of the same images: annotations/captions_{train,val}2014.json
       (5 per image) and image_info_test2015.json; layout=flickr30k writes flickr30k/captions_{split}.json
       and flickr30k/features/{split}/<id>.jpg.npz instead (no VQA files)

Generation is deterministic for a seed and atomic (nothing half-written).
Use the result with --data DIR (or task.data_dir=DIR). Generator settings
are KEY=VALUE pairs, e.g.:
  nas data synth --task vqa --out data/vqa-synth train_images=500 feature_dim=2048
"""


def _generators() -> dict[str, tuple[type, Callable[..., Any]]]:
    from nas.synth import (SynthCaptionConfig, SynthClevrRefConfig, SynthGqaConfig, SynthNlvr2Config,
                           SynthPretrainConfig, SynthReferConfig, SynthScanConfig, SynthVqaConfig, generate_caption,
                           generate_clevr_ref, generate_gqa, generate_nlvr2, generate_pretrain, generate_refer,
                           generate_scan, generate_vqa)

    return {"vqa": (SynthVqaConfig, generate_vqa), "vgd": (SynthReferConfig, generate_refer),
            "itm": (SynthScanConfig, generate_scan), "gqa": (SynthGqaConfig, generate_gqa),
            "nlvr2": (SynthNlvr2Config, generate_nlvr2), "pretrain": (SynthPretrainConfig, generate_pretrain),
            "clevr_ref": (SynthClevrRefConfig, generate_clevr_ref), "caption": (SynthCaptionConfig, generate_caption)}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="built-in datasets", description="Built-in datasets.")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser("synth", help="generate a built-in dataset", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    generators = _generators()
    synth.add_argument("--task", default="vqa", choices=list(generators), help="whose formats to write (default vqa)")
    synth.add_argument("--out", help="output folder (default data/<task>-synth)")
    synth.add_argument("--seed", type=int, help="generator seed (default 0)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="generator settings (see below)")
    synth.set_defaults(handler=run)
    synth.epilog = "generator settings:\n" + "\n".join(
        f"  {task}: " + ", ".join(f"{f.name}={_default(f)}" for f in dataclasses.fields(config))
        for task, (config, _) in generators.items())


def _default(field: dataclasses.Field) -> str:
    """A field's default as a KEY=VALUE setting shows it (lists as [a,b], the override syntax)."""
    value = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


def run(args: argparse.Namespace) -> int:
    config_class, generate = _generators()[args.task]
    values = check_section(overrides_layer(args.settings).values, config_class, "", "command line")
    if args.seed is not None:
        values["seed"] = args.seed
    out = Path(args.out or f"data/{args.task}-synth")
    summary = generate(out, config_class(**values), progress=not args.quiet)
    print(f"built-in {args.task} dataset in {summary.root}")
    for field in dataclasses.fields(summary):
        value = getattr(summary, field.name)
        if isinstance(value, dict) and value:  # the flickr30k caption layout has no questions
            print(f"  {field.name}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
    print(f"use it with: nas search --task {args.task} --data {summary.root}")
    return 0
