"""``nas submit``: write a split's evaluation-server file from a retrained checkpoint."""

from __future__ import annotations

import argparse

from nas.config import Layer, overrides_layer
from nas.run import setup_logging

HELP = """Predict a split with a retrained model and write the file an evaluation
server expects: VQA a JSON list of {question_id, answer} (every question of the
split, string answers), grounding a JSON list of {sent_id, bbox [x, y, w, h]},
matching the (images x captions) similarity matrix as .npy. An incomplete file
is never written: a missing, repeated or unknown id is an error naming it.

The checkpoint's own config and genotype rebuild the model, and the run
directory around it supplies the vocabularies. With train.ema_decay the
averaged weights are used (--raw-weights for the others).

examples:
  nas submit --checkpoint runs/qs/retrain/checkpoints/best.pt
  nas submit --checkpoint runs/vqa/checkpoints/last.pt --split test --data /data/vqa --out vqa_test.json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="write an evaluation-server file from a checkpoint",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="FILE",
                        help="checkpoints/best.pt or last.pt of a nas retrain run")
    parser.add_argument("--split", help="split to predict (default: the run's task.test_split, e.g. test or testA)")
    parser.add_argument("--task", help="check that the checkpoint is of this task")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (default: the one the run used)")
    parser.add_argument("--out", metavar="FILE", help="output file (default: <run>/results/<task>_<split>_results.json)")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw weights even when an EMA exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.device=cpu")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nas.submit import submit

    setup_logging(None, args.quiet)
    flags = {"task": {"data_dir": args.data}} if args.data else {}
    layers = [Layer("command-line flags", flags), overrides_layer(args.overrides)]
    result = submit(args.checkpoint, args.split, args.out, layers, progress=not args.quiet,
                    raw_weights=args.raw_weights, expected_task=args.task)
    print(f"{result.split}: wrote {result.path} ({result.weights} weights)")
    if result.metrics:
        key = result.primary_metric
        print(f"  {key} on {result.split}: {result.metrics[key]:.2f}")
    return 0
