"""Variable-length regions: training-step time when every image is padded to 100 boxes (MmNas),
when a batch is trimmed to its widest image (vlnas's default), and with ``train.group_by_length``.

Region counts follow a realistic bottom-up-attention spread (uniform 10..100 boxes per image).
The model is MmNas's published VQA genotype; the width and batch are arguments (the published
shape, ``--hidden 512 --batch 64 --dim 2048``, takes ~11 s a step on two CPU cores).

    python3 benchmarks/regions.py --hidden 256 --batch 32 --dim 1024 --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nas.data import GlobalBatchSampler  # noqa: E402
from nas.genotype import load_genotype  # noqa: E402
from nas.heads import FusionHead  # noqa: E402
from nas.space import fixed_block_factory  # noqa: E402
from nas.task import TaskMeta  # noqa: E402
from search_spaces.mmnas import MmnasConfig, MmnasSpace  # noqa: E402

TOKENS, VOCAB, ANSWERS = 14, 20000, 3129


def make_batch(counts: np.ndarray, width: int, dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    features = torch.zeros(len(counts), width, dim)
    boxes = torch.zeros(len(counts), width, 4)
    for row, count in enumerate(counts):
        features[row, :count] = torch.randn(count, dim, generator=generator)
        corner = torch.rand(count, 2, generator=generator) * 400
        boxes[row, :count] = torch.cat([corner, corner + 8 + torch.rand(count, 2, generator=generator) * 200], 1)
    return {"tokens": torch.randint(1, VOCAB, (len(counts), TOKENS), generator=generator), "features": features,
            "boxes": boxes, "num_regions": torch.as_tensor(counts), "image_size": torch.tensor([[640, 480]] * len(counts)),
            "target": torch.rand(len(counts), ANSWERS, generator=generator).round()}


def time_steps(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for batch in batches:
        start = time.perf_counter()
        logits = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"], reduction="sum")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=1024, help="region feature size (2048 in the release)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--images", type=int, default=4000, help="images whose counts the sampler groups")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = np.random.default_rng(0).integers(10, 101, size=args.images)
    choices = load_genotype(REPO / "genotypes" / "mmnas_vqa.json").choices
    space = MmnasSpace(MmnasConfig(hidden=args.hidden, head_dim=64, enc_blocks=sum(k.startswith("enc/") for k in choices),
                                   dec_blocks=sum(k.startswith("dec/") for k in choices)))
    meta = TaskMeta(vocab_size=VOCAB, feature_dim=args.dim, num_outputs=ANSWERS)
    torch.manual_seed(0)
    model = space.build_model(meta, FusionHead(args.hidden, 2 * args.hidden, ANSWERS),
                              fixed_block_factory(choices)).train()
    plain = GlobalBatchSampler(len(counts), args.batch, True, seed=1).batches[:args.steps + 1]
    grouped = GlobalBatchSampler(len(counts), args.batch, True, seed=1, lengths=counts).batches[:args.steps + 1]
    generator = torch.Generator().manual_seed(0)
    modes = {
        "pad to 100 (MmNas)": [make_batch(counts[b], 100, args.dim, generator) for b in plain],
        "trim to the batch's widest (default)": [make_batch(counts[b], int(counts[b].max()), args.dim, generator)
                                                 for b in plain],
        "group_by_length": [make_batch(counts[b], int(counts[b].max()), args.dim, generator) for b in grouped],
    }
    results = {}
    for name, batches in modes.items():
        times = time_steps(model, batches)[1:]  # the first step pays for allocation
        width = statistics.mean(b["features"].shape[1] for b in batches[1:])
        real = statistics.mean(float(b["num_regions"].float().mean()) for b in batches[1:])
        results[name] = {"ms_per_step": round(1000 * statistics.median(times), 1), "mean_width": round(width, 1),
                         "mean_real_regions": round(real, 1)}
    base = results["pad to 100 (MmNas)"]["ms_per_step"]
    print(f"MmNas VQA genotype, hidden {args.hidden}, batch {args.batch}, {args.dim}-d regions, {TOKENS} tokens, "
          f"{torch.get_num_threads()} threads; counts uniform 10..100 (mean {counts.mean():.1f})")
    print("| batches | mean width | mean real boxes | ms/step | speed-up over padding to 100 |")
    print("| --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        print(f"| {name} | {figures['mean_width']} | {figures['mean_real_regions']} | {figures['ms_per_step']} | "
              f"{base / figures['ms_per_step']:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=2))


if __name__ == "__main__":
    main()
