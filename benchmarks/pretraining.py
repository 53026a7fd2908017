"""Pre-training then fine-tuning against fine-tuning from scratch, on the built-in data (issue 8).

One pre-training run (``nas pretrain``) on the built-in corpus, then, per seed, two GQA
fine-tuning runs with the same small budget: one from the pre-trained checkpoint
(``--init``), one from scratch. Same genotype, space, recipe and seeds; only the start
differs. Prints a markdown table and writes ``<out>/results.json``.

    python3 benchmarks/pretraining.py --out runs/bench-pretraining
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

# The quick-start network: MmNas's prior pattern at 4 encoder and 6 decoder blocks, width 64.
GENOTYPE = Path(__file__).resolve().parents[1] / "genotypes" / "mmnas_prior_small.json"
SPACE = ["space.hidden=64", "space.head_dim=16", "space.relation_dim=16"]


def nas(*args: str) -> None:
    command = [sys.executable, "-m", "nas", *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-pretraining")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--size", default="small", help="built-in size preset of both corpora (tiny|small|default)")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lrs", type=float, nargs="+", default=[1e-3, 3e-4],
                        help="fine-tuning learning rates; each is run from both starts")
    parser.add_argument("--finetune-images", type=int, default=200,
                        help="fine-tune on the questions of the first N images only (task.max_images: a "
                             "quarter of the small train split; all 200 val images)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="task.cache_dir (default: vlnas's cache)")
    parser.add_argument("pretrain_overrides", nargs="*", help="extra KEY=VALUE overrides of the pre-training run")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [*SPACE, f"train.threads={args.threads}", f"task.synth_size={args.size}", "train.batch_size=64"]
    if args.cache:
        common.append(f"task.cache_dir={args.cache}")
    pretrain = out / "pretrain"
    nas("pretrain", "--genotype", str(GENOTYPE), "--out", str(pretrain), "--quiet", "--seed", "0", *common,
        "train.lr=1e-3", f"train.epochs={args.pretrain_epochs}", "train.warmup_epochs=1",
        f"train.decay_epochs=[{max(args.pretrain_epochs - 2, 1)}]", *args.pretrain_overrides)
    finetune = [*common, f"train.epochs={args.finetune_epochs}", "train.warmup_epochs=1", "train.decay_epochs=[]"]
    if args.finetune_images:
        finetune.append(f"task.max_images={args.finetune_images}")
    rows = []
    for lr in args.finetune_lrs:
        for seed in args.seeds:
            row = {"lr": lr, "seed": seed}
            for start in ("pretrained", "scratch"):
                run = out / f"gqa-lr{lr:g}-{start}-seed{seed}"
                init = ["--init", str(pretrain / "checkpoints" / "best.pt")] if start == "pretrained" else []
                nas("retrain", "--genotype", str(GENOTYPE), "--task", "gqa", "--out", str(run), "--quiet", "--seed",
                    str(seed), *init, *finetune, f"train.lr={lr}")
                summary = json.loads((run / "summary.json").read_text())
                row[start] = summary["final"]["accuracy"]
                row["majority"] = summary["baseline"]["accuracy"]
            rows.append(row)
    pre = json.loads((pretrain / "summary.json").read_text())
    means = {lr: {k: round(statistics.mean(r[k] for r in rows if r["lr"] == lr), 2) for k in ("pretrained", "scratch")}
             for lr in args.finetune_lrs}
    result = {"date": dt.date.today().isoformat(), "command": " ".join(sys.argv), "rows": rows,
              "pretrain_final": pre["final"], "pretrain_baseline": pre["baseline"], "mean": means}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print("\n| fine-tuning lr | seed | GQA val accuracy, pre-trained | from scratch | majority answer |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['seed']} | {r['pretrained']:.2f} | {r['scratch']:.2f} | {r['majority']:.2f} |")
    for lr, mean in means.items():
        print(f"| {lr:g} | mean | {mean['pretrained']:.2f} | {mean['scratch']:.2f} | |")
    print(f"pre-training val: {pre['final']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
