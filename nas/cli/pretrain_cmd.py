"""``nas pretrain``: a retrain of a genotype on the pre-training task, whose weights start later retrains."""

from __future__ import annotations

import argparse
import datetime as dt

from nas.cli.common import add_run_arguments
from nas.cli.retrain_cmd import add_genotype_argument, add_init_argument, run as run_retrain_command

HELP = """Pre-train a genotype's embedding and backbone as LXMERT does, on a corpus of
captions and questions about images (the 'pretrain' task), then start fine-tuning
runs from it with 'nas retrain --init'.

Objectives (weights task.mlm_weight, object_weight, attr_weight, feature_weight,
match_weight, qa_weight):
  masked words     15% of words (task.token_mask_prob): 80% MASK, 10% a random word,
                   10% kept; the word is predicted
  masked regions   15% of regions (task.region_mask_prob) have their feature zeroed;
                   their detector object class and attribute (TSV objects_id/attrs_id,
                   weighted by confidence) and their feature (smooth L1) are predicted
  matching         half the sentences (task.mismatch_prob) are swapped for another
                   image's; is the pair matched? Swapped pairs score no masked word or
                   region (task.score_mismatched=true scores them, as LXMERT's code)
  QA               the answers of labelled questions (task.qa; matched pairs only)

Corpus (task.data_dir, LXMERT's data/ layout): lxmert/{mscoco_train,mscoco_nominival,
mscoco_minival,vgnococo}.json, a list of {"img_id", "sentf": {source: [sentences]},
"labelf": {source: [{answer: score}]}}, with LXMERT obj36 TSVs in
mscoco_imgfeat/{train2014,val2014}_obj36.tsv and vg_gqa_imgfeat/vg_gqa_obj36.tsv.
task.train_split joins corpus files with '+'. Without --data the built-in corpus is
generated (nas data synth --task pretrain), from the same world and feature
prototypes as the built-in GQA data of the same synth_seed and size preset.

It is 'nas retrain --task pretrain': the same loop, checkpoints, resuming, --nproc
and outputs (validation accuracy = the mean of the objectives' accuracies).

examples:
  nas pretrain --genotype genotypes/mcan.json --config quickstart --out runs/pt
  nas retrain --genotype genotypes/mcan.json --task gqa --config quickstart \\
      --init runs/pt/checkpoints/best.pt --out runs/gqa-from-pt
  nas pretrain --genotype G --data data/lxmert task.train_split=mscoco_train+mscoco_nominival+vgnococo
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pretrain", help="pre-train a genotype (masked words and regions, matching, QA)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_genotype_argument(parser)
    add_init_argument(parser)
    add_run_arguments(parser)
    parser.set_defaults(handler=run, task="pretrain")


def run(args: argparse.Namespace) -> int:
    if args.out is None and not args.resume:
        args.out = f"runs/pretrain-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return run_retrain_command(args, command="pretrain")
