"""Supernet overhead: one search step (weight step + the strategy's share of architecture steps)
over one training step of the exported child at the same width, and the same for peak memory.

Each measurement runs in its own process: it builds the network (supernet with the strategy's
mixed ops, or the fixed child), trains ``--steps`` steps on synthetic VQA batches of the given
shape, and reports the median step time and its memory high-water mark above the process's
own baseline (everything imported, nothing built), from the kernel's ``ru_maxrss``. The child is the
MCAN layout at the space's depth (any fixed child costs about the same per block).

    python3 benchmarks/supernet_overhead.py --hidden 128 --batch 32 --steps 8
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = ["mmnas", "gdas", "spos", "darts", "darts2"]  # darts2: second-order DARTS


def measure(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs in a fresh process (``--one KIND``): time and memory of ``kind`` (a strategy or 'child')."""
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    sys.path.insert(0, str(REPO))
    import nas.strategies  # noqa: F401
    from nas.heads import FusionHead
    from nas.registry import STRATEGIES as REGISTRY
    from nas.space import fixed_block_factory
    from nas.strategies.base import WeightAccess
    from nas.task import TaskMeta
    from search_spaces.mmnas import MmnasConfig, MmnasSpace

    # The first operations load torch's kernels (over 100 MiB): pay for that before the baseline.
    warm = torch.nn.MultiheadAttention(16, 2)
    x = torch.randn(3, 2, 16, requires_grad=True)
    torch.optim.Adam(warm.parameters()).step(), warm(x, x, x)[0].softmax(-1).sum().backward()
    torch.nn.functional.binary_cross_entropy_with_logits(x, x.detach().sigmoid()).backward()
    del warm, x
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # everything imported, nothing built
    space = MmnasSpace(MmnasConfig(hidden=args.hidden, head_dim=min(64, args.hidden), enc_blocks=args.enc,
                                   dec_blocks=args.dec, dropout=0.1))
    meta = TaskMeta(vocab_size=2000, feature_dim=args.dim, num_outputs=args.answers)
    head = FusionHead(args.hidden, 2 * args.hidden, args.answers)
    torch.manual_seed(0)
    strategy = None
    if kind == "child":
        mcan = {f"enc/{i}": ("self_att" if i % 2 == 0 else "feed_forward") for i in range(args.enc)}
        mcan |= {f"dec/{i}": ["self_att", "guided_att", "feed_forward"][i % 3] for i in range(args.dec)}
        model = space.build_model(meta, head, fixed_block_factory(mcan))
    else:
        name = "darts" if kind == "darts2" else kind
        config = REGISTRY.get(name).Config(**({"second_order": True} if kind == "darts2" else {}))
        if hasattr(config, "arch_start_epoch"):
            config.arch_start_epoch = 0
        strategy = REGISTRY.get(name)(config, seed=0)
        model = space.build_model(meta, head, strategy.make_block)
        strategy.attach(space.prior(), torch.device("cpu"))
        strategy.parameter_free_ops = frozenset(space.parameter_free_ops)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        b, n = args.batch, args.regions
        corner = torch.rand(b, n, 2, generator=generator) * 400
        return {"tokens": torch.randint(1, 2000, (b, 14), generator=generator),
                "features": torch.randn(b, n, args.dim, generator=generator),
                "boxes": torch.cat([corner, corner + 8 + torch.rand(b, n, 2, generator=generator) * 200], 2),
                "num_regions": torch.full((b,), n), "image_size": torch.tensor([[640, 480]] * b),
                "target": torch.rand(b, args.answers, generator=generator).round()}

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["target"], reduction="sum")

    batches = [batch() for _ in range(4)]
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        if strategy is not None:
            strategy.before_weight_step()
        loss = loss_fn(batches[step % 2])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if strategy is not None and strategy.wants_arch_step(10 ** 6, step):
            held_out = batches[2 + step % 2]
            if strategy.wants_weight_batch:
                weights = WeightAccess(list(model.parameters()), optimizer, batches[step % 2])
                strategy.arch_step_with_weights(loss_fn, held_out, weights)
            else:
                strategy.arch_step(loss_fn, held_out)
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ms_per_step": 1000 * statistics.median(times[1:]), "peak_mib": (peak_kib - baseline_kib) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--enc", type=int, default=6)
    parser.add_argument("--dec", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--regions", type=int, default=50)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    forwarded = [a for a in sys.argv[1:] if a != "--out" and not a.endswith(".json")]
    results = {}
    for kind in ["child", *args.strategies]:
        done = subprocess.run([sys.executable, __file__, *forwarded, "--one", kind], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{kind}: failed\n{done.stderr}")
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    child = results["child"]
    print(f"mmnas space, hidden {args.hidden}, {args.enc}+{args.dec} blocks, batch {args.batch}, {args.regions} "
          f"regions of {args.dim}, {args.answers} answers; {args.steps} timed steps each")
    print("| network | ms/step | x child | peak MiB above baseline | x child |")
    print("| --- | --- | --- | --- | --- |")
    for kind, figures in results.items():
        print(f"| {kind} | {figures['ms_per_step']:.1f} | {figures['ms_per_step'] / child['ms_per_step']:.2f} | "
              f"{figures['peak_mib']:.0f} | {figures['peak_mib'] / child['peak_mib']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=2))


if __name__ == "__main__":
    main()
