"""Strategy benchmark: does a searched genotype beat hand-made and random ones, per strategy?

For each seed, every strategy searches the quick-start space on the built-in VQA
data, and then every genotype is retrained with the same recipe and scored on
val:
- what each strategy found;
- the MCAN layout and MmNas's published VQA genotype (`genotypes/`, at their
  own depth);
- `--random` genotypes drawn uniformly from the space.

Each search and retrain is a separate ``nas`` process, timed on the wall clock,
with its peak resident memory taken from ``wait4``. Finished runs are kept, so
a rerun continues where a killed one stopped.

    python3 benchmarks/strategies.py --out runs/bench-strategies          # 3 seeds, ~1 h on two cores
    python3 benchmarks/strategies.py --seeds 1 --strategies mmnas darts   # a quicker look

It writes ``<out>/results.json`` and prints Markdown tables: mean ± std over seeds
of val accuracy, overall and per question family, and each strategy's search time
and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Strategy -> extra overrides: Optuna gets a budget of about one retrain (6 trials of 2 epochs).
STRATEGY_OVERRIDES = {"mmnas": [], "darts": [], "gdas": [], "spos": [],
                      "optuna": ["strategy.trials=6", "strategy.trial_epochs=2", "strategy.sampler_startup_trials=3",
                                 "strategy.pruner_startup_trials=2"]}
PUBLISHED = {"mcan": REPO / "genotypes" / "mcan.json", "mmnas_vqa": REPO / "genotypes" / "mmnas_vqa.json"}


def run_timed(command: list[str], log_path: Path) -> dict[str, float]:
    """Run ``command``; its wall time (s) and peak resident memory (MiB) from the kernel's accounting."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}; see {log_path}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def random_genotype(seed: int, index: int, config: str, path: Path) -> Path:
    """A genotype drawn uniformly from the space's choices (its own stream per seed and index)."""
    import nas.strategies  # noqa: F401  (registrations)
    import search_spaces  # noqa: F401
    import tasks  # noqa: F401
    from nas.cli.common import config_layers
    from nas.cli.search_cmd import SEARCH_DEFAULTS
    from nas.config import resolve_config
    from nas.genotype import Genotype, save_genotype
    from nas.registry import SPACES

    args = argparse.Namespace(config=[config], task="vqa", space=None, strategy=None, data=None, seed=seed,
                              max_images=None, overrides=[])
    run_config = resolve_config(config_layers(args, SEARCH_DEFAULTS))
    space = SPACES.get(run_config.space.name)(run_config.space)
    draw = random.Random(seed * 1000 + index)
    choices = {label: draw.choice(candidates) for label, candidates in space.choices().items()}
    genotype = Genotype(space=space.name, task="vqa", choices=choices,
                        provenance={"strategy": "random", "seed": seed, "index": index})
    return save_genotype(genotype, path)


def val_metrics(retrain_dir: Path) -> dict:
    summary = json.loads((retrain_dir / "summary.json").read_text())
    return {"accuracy": summary["final"]["accuracy"], "per_family": summary["final"]["per_family"],
            "baseline": summary["baseline"]}


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict:
    nas = [sys.executable, "-m", "nas"]
    common = ["--task", "vqa", "--config", args.config, "--seed", str(seed), "--quiet"]
    record: dict = {"seed": seed, "search": {}, "retrain": {}}
    genotypes: dict[str, Path] = {}
    for strategy in args.strategies:
        folder = out / f"seed{seed}" / "search" / strategy
        timing_path = folder / "timing.json"
        if not timing_path.is_file():
            timing = run_timed([*nas, "search", *common, "--strategy", strategy, "--out", str(folder),
                                *STRATEGY_OVERRIDES[strategy]], folder.parent / f"{strategy}.log")
            timing_path.write_text(json.dumps(timing))
        record["search"][strategy] = json.loads(timing_path.read_text())
        genotypes[strategy] = folder / "genotype.json"
        print(f"seed {seed} search {strategy}: {record['search'][strategy]}", flush=True)
    genotypes.update(PUBLISHED)
    for index in range(args.random):
        genotypes[f"random{index}"] = random_genotype(seed, index, args.config,
                                                      out / f"seed{seed}" / "random" / f"{index}.json")
    for name, genotype in genotypes.items():
        folder = out / f"seed{seed}" / "retrain" / name
        if not (folder / "summary.json").is_file() or not (folder / "timing.json").is_file():
            timing = run_timed([*nas, "retrain", *common, "--genotype", str(genotype), "--out", str(folder)],
                               folder.parent / f"{name}.log")
            (folder / "timing.json").write_text(json.dumps(timing))
        record["retrain"][name] = {**val_metrics(folder), **json.loads((folder / "timing.json").read_text())}
        print(f"seed {seed} retrain {name}: val accuracy {record['retrain'][name]['accuracy']:.2f}", flush=True)
    return record


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def tables(records: list[dict], args: argparse.Namespace) -> str:
    names = [*args.strategies, *PUBLISHED, "random (all draws)"]
    families = sorted(records[0]["retrain"]["mcan"]["per_family"])

    def scores(name: str, key=lambda r: r["accuracy"]) -> list[float]:
        if name == "random (all draws)":
            return [key(r["retrain"][n]) for r in records for n in r["retrain"] if n.startswith("random")]
        return [key(r["retrain"][name]) for r in records]

    lines = ["| genotype | val accuracy | " + " | ".join(families) + " |",
             "| --- | --- | " + " | ".join("---" for _ in families) + " |"]
    for name in names:
        cells = [mean_std(scores(name))] + [mean_std(scores(name, lambda r, f=f: r["per_family"][f]))
                                            for f in families]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    baseline = records[0]["retrain"]["mcan"]["baseline"]
    lines.append(f"\nmajority-answer baseline ('{baseline['answer']}'): {baseline['accuracy']:.2f}; per family "
                 + ", ".join(f"{f} {v:.2f}" for f, v in sorted(baseline["per_family"].items())) + "\n")
    lines += ["| strategy | search wall time (s) | search peak memory (MiB) |", "| --- | --- | --- |"]
    for strategy in args.strategies:
        lines.append(f"| {strategy} | {mean_std([r['search'][strategy]['wall_s'] for r in records])} | "
                     f"{mean_std([r['search'][strategy]['peak_rss_mib'] for r in records])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-strategies")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_OVERRIDES), choices=list(STRATEGY_OVERRIDES))
    parser.add_argument("--random", type=int, default=3, help="random genotypes per seed")
    parser.add_argument("--config", default="quickstart")
    args = parser.parse_args()
    records = [run_seed(seed, args, args.out) for seed in args.seeds]
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "records": records}, indent=2))
    print(tables(records, args))


if __name__ == "__main__":
    main()
