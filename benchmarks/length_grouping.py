"""Length grouping on data with 10-100 boxes per image: the same metric, in less time?

`benchmarks/regions.py` times steps on random features. This one trains for real: the
built-in VQA data is generated with many distractor boxes (3-7 objects plus 0-93 part and
background boxes, so 3-100 regions per image), and one quick-start genotype (drawn at
random from the space with a fixed seed) is retrained with the quick-start recipe, with
``train.group_by_length`` off and on, for each seed. Batches are trimmed to their longest
image either way; grouping puts images of similar box counts in the same batch.

    python3 benchmarks/length_grouping.py --out runs/bench-grouping --seeds 1 2

Prints a Markdown table of val accuracy and retrain wall time per seed and setting, and
writes ``<out>/results.json``. Finished runs are kept, so a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from strategies import REPO, random_genotype, run_timed, val_metrics

sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-grouping"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-images", type=int, default=500)
    parser.add_argument("--max-distractors", type=int, default=93)
    args = parser.parse_args()
    nas = [sys.executable, "-m", "nas"]
    data = args.out / "data"
    if not (data / "synth_meta.json").is_file():
        run_timed(nas + ["data", "synth", "--task", "vqa", "--out", str(data), "--quiet",
                         f"train_images={args.train_images}", "val_images=200", "test_images=20",
                         f"max_distractors={args.max_distractors}"], args.out / "synth.log")
    genotype = random_genotype(0, 0, "quickstart", args.out / "genotype.json")
    results = {}
    for seed in args.seeds:
        for grouped in (False, True):
            name = f"seed{seed}-{'grouped' if grouped else 'trimmed'}"
            folder = args.out / name
            if not (folder / "summary.json").is_file():
                timing = run_timed(nas + ["retrain", "--genotype", str(genotype), "--config", "quickstart",
                                          "--data", str(data), "--seed", str(seed), "--out", str(folder), "--quiet",
                                          f"train.group_by_length={str(grouped).lower()}"], args.out / f"{name}.log")
                (folder / "timing.json").write_text(json.dumps(timing))
            results[name] = {**val_metrics(folder), **json.loads((folder / "timing.json").read_text())}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| seed | batches | val accuracy | retrain wall time (s) |\n| --- | --- | --- | --- |")
    for name, result in results.items():
        seed, setting = name.split("-")
        print(f"| {seed[4:]} | {setting} | {result['accuracy']:.2f} | {result['wall_s']:.0f} |")
    for setting in ("trimmed", "grouped"):
        rows = [r for n, r in results.items() if n.endswith(setting)]
        print(f"{setting}: mean val accuracy {statistics.mean(r['accuracy'] for r in rows):.2f}, "
              f"mean wall {statistics.mean(r['wall_s'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
