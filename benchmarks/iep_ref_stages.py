"""IEP-Ref's stages on built-in clevr_ref data: each run's cumulative IoU and its generator's programs.

Usage: python benchmarks/iep_ref_stages.py RUN_DIR [RUN_DIR ...]

For every ``nas retrain`` run directory of the ``modules`` space, prints the final and best
validation cumulative IoU, the task's baseline, and the share of validation expressions whose
greedy program equals the ground truth exactly (program accuracy of the run's last checkpoint).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import nas.strategies  # noqa: F401  (registrations)
import search_spaces  # noqa: F401
import tasks  # noqa: F401
from nas.checkpoint import load_checkpoint
from nas.config import resolve_config, yaml_layer
from nas.data import make_eval_loader
from nas.registry import SPACES, TASKS
from nas.space import fixed_block_factory
from tasks.clevr_ref.programs import END


def program_accuracy(run: Path) -> float:
    config = resolve_config([yaml_layer(run / "config.yaml")])
    task = TASKS.get(config.task.name)(config.task, run, progress=False)
    data = task.prepare([config.task.eval_split])
    space = SPACES.get(config.space.name)(config.space)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    model = space.build_model(data.meta, torch.nn.Identity(), fixed_block_factory(state["genotype"]["choices"]))
    model.load_state_dict(state["model"])
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch in make_eval_loader(data.splits[config.task.eval_split], 256):
            predicted, _ = model.generator.decode(batch["tokens"], sample=False)
            for guess, truth in zip(predicted.tolist(), batch["program"].tolist()):
                right += guess[:guess.index(END) + 1 if END in guess else None] == truth[:truth.index(END) + 1]
                total += 1
    return 100.0 * right / max(total, 1)


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    for run in map(Path, runs):
        summary = json.loads((run / "summary.json").read_text())
        print(f"{run.name}: val cIoU final {summary['final']['cumulative_iou']:.2f} best {summary['best']:.2f} "
              f"(baseline {summary['baseline']['rule']} {summary['baseline']['cumulative_iou']:.2f}); "
              f"program accuracy {program_accuracy(run):.2f}; per family {summary['final'].get('per_family')}")


if __name__ == "__main__":
    main(sys.argv[1:])
