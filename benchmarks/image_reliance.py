"""Does a trained model still look at the image? Output change when the images of a batch are shuffled.

Usage: python benchmarks/image_reliance.py [--checkpoint NAME] [--samples N] RUN_DIR [RUN_DIR ...]

For every ``nas retrain`` / ``nas pretrain`` run directory, loads ``checkpoints/NAME.pt`` (default
``best``), runs the first N evaluation samples twice, once with their own images and once with the
images (features, boxes, region counts, sizes) permuted across the batch, and prints the mean
absolute change of the output against the output's mean size. For the ``mmnas`` space it also
prints, after each decoder block, how much the image stream changes under the shuffle and how much
its regions still differ from one another: a stack whose image stream no longer depends on the
image answers from the text alone, whatever its accuracy says (issue 8: QA-only pre-training on
statements ends that way, and fine-tuning from it cannot recover).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from run_loading import load_run

IMAGE_KEYS = ("features", "boxes", "num_regions", "image_size")


def main_output(output: Any) -> torch.Tensor:
    """The task's answer: the tensor itself, or the answer logits of a multi-objective head."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("answers", "answer_logits", "logits"):
        if key in output and output[key].numel():
            return output[key]
    return next(v for v in output.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def block_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The image stream after each decoder block (empty when the backbone has no ``decoder``)."""
    blocks = getattr(model.backbone, "decoder", None)
    if blocks is None:
        return []
    seen: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: seen.append(out)) for block in blocks]
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def report(run: Path, checkpoint: str, samples: int, seed: int) -> None:
    config, _, data, model = load_run(run, checkpoint=checkpoint)
    model.eval()
    dataset = data.splits[config.task.eval_split]
    batch = dataset.__getitems__(list(range(min(samples, len(dataset)))))
    rows = len(batch["tokens"])
    shuffle = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    shuffled = {**batch, **{key: batch[key][shuffle] for key in IMAGE_KEYS}}
    with torch.no_grad():
        own, other = main_output(model(batch)), main_output(model(shuffled))
        change = (own - other).abs().mean().item()
        print(f"{run} ({checkpoint}, {rows} rows): output change when images are shuffled {change:.3g} "
              f"against output size {own.abs().mean().item():.3g} (ratio {change / max(own.abs().mean().item(), 1e-12):.2g})")
        for number, (a, b) in enumerate(zip(block_outputs(model, batch), block_outputs(model, shuffled))):
            print(f"  after decoder block {number}: image stream change {(a - b).abs().mean().item():.2e}, "
                  f"spread across regions {a.std(1).mean().item():.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--checkpoint", default="best", help="checkpoints/NAME.pt (default best)")
    parser.add_argument("--samples", type=int, default=256, help="evaluation samples in the batch (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        report(run, args.checkpoint, args.samples, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
