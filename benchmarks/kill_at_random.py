"""Kill runs at random moments and check that nothing half-written is left and every run resumes.

Three kinds of run are SIGKILLed in turn, each at a random moment of its life:
- ``retrain``: a smoke retrain writing a checkpoint after every optimizer step
  (``train.checkpoint_every=1``), metrics and TensorBoard files;
- ``search``: a smoke search rewriting ``genotype.json`` and its checkpoint every epoch;
- ``cache``: a retrain in an empty cache folder, killed while it generates the built-in dataset
  and builds the feature cache.

After every kill, every file the run left must be whole: each checkpoint loads
(``weights_only=True``), each JSON / JSON-lines file parses, each genotype validates, and each
cache or dataset folder is either complete or absent (temporary folders are ignored, and
removed by the next run). Rerunning the same command must then finish. Exit status 1 on any
partial file or failed resume.

    python3 benchmarks/kill_at_random.py --kills 20 --out runs/kill-at-random
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NAS = [sys.executable, "-m", "nas"]
SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]
COMMANDS = {
    "retrain": lambda out: [*NAS, "retrain", "--genotype", str(REPO / "genotypes" / "mcan.json"), *SMOKE,
                            "train.epochs=3", "train.checkpoint_every=1", "--out", str(out)],
    "search": lambda out: [*NAS, "search", "--task", "vqa", *SMOKE, "train.epochs=4", "--out", str(out)],
    "cache": lambda out: [*NAS, "retrain", "--genotype", str(REPO / "genotypes" / "mcan.json"), *SMOKE,
                          "train.epochs=1", "--out", str(out)],
}
WINDOW = {"retrain": (1.0, 10.0), "search": (1.0, 8.0), "cache": (0.5, 6.0)}  # seconds after start


def check_whole(folder: Path) -> list[str]:
    """Problems with the files under ``folder``: anything that is not a whole, readable file."""
    from nas.checkpoint import load_checkpoint
    from nas.errors import UserError
    from nas.genotype import load_genotype

    problems = []
    for path in folder.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # temporary files and folders of interrupted writes start with a dot
        try:
            if path.suffix == ".pt":
                load_checkpoint(path)
            elif path.name == "genotype.json":
                load_genotype(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            elif path.suffix == ".npy":
                import numpy as np

                np.load(path, mmap_mode="r")
        except (UserError, ValueError, OSError, EOFError) as error:
            problems.append(f"{path}: {error}")
    for done in folder.rglob("done.json"):  # a cache folder is complete when done.json is there
        arrays = {p.stem for p in done.parent.glob("*.npy")}
        if not {"features", "boxes", "num_regions", "image_size", "image_ids"} <= arrays:
            problems.append(f"{done.parent}: done.json without all its arrays ({sorted(arrays)})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "kill-at-random")
    args = parser.parse_args()
    draw = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    shared_cache = args.out / "cache"
    failures, log = 0, []
    for number in range(args.kills):
        kind = list(COMMANDS)[number % len(COMMANDS)]
        out = args.out / f"{number:02d}-{kind}"
        cache = args.out / f"cache-{number:02d}" if kind == "cache" else shared_cache
        env = {**os.environ, "VLNAS_CACHE": str(cache)}
        command = COMMANDS[kind](out)
        delay = draw.uniform(*WINDOW[kind])
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished_first = process.poll() is not None
        if not finished_first:
            process.send_signal(signal.SIGKILL)
        process.wait()
        problems = check_whole(out) + (check_whole(cache) if kind == "cache" else [])
        if finished_first:  # nothing to resume: a rerun would rightly refuse to train past train.epochs
            rerun = subprocess.CompletedProcess(command, 0, "", "")
        else:
            rerun = subprocess.run(command, env=env, capture_output=True, text=True)
        resumed = rerun.returncode == 0
        problems += check_whole(out)
        ok = not problems and resumed
        failures += not ok
        line = (f"kill {number + 1:2d} {kind:7s} after {delay:5.2f}s"
                f"{' (had already finished)' if finished_first else ''}: "
                f"{'whole files, resumed' if ok else 'FAILED'}")
        print(line, flush=True)
        log.append({"kind": kind, "delay_s": round(delay, 2), "finished_before_kill": finished_first,
                    "problems": problems, "rerun_exit": rerun.returncode,
                    "rerun_tail": rerun.stderr.strip().splitlines()[-1:] if not resumed else []})
        if not ok:
            print("\n".join(problems) or rerun.stderr[-2000:], flush=True)
    (args.out / "results.json").write_text(json.dumps(log, indent=2))
    early = sum(entry["finished_before_kill"] for entry in log)
    print(f"{args.kills - failures} of {args.kills} kills left only whole files and resumed "
          f"({early} run(s) had finished before their kill)")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
