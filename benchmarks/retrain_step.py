"""Time one retrain step of a genotype at MmNas's published VQA shape, and its achieved FLOP/s.

The shape is MmNas's: hidden 512, batch 64, 100 regions of 2048-d features, 14 question
tokens, a 20k-word vocabulary and 3,129 answers. One step is forward, the summed BCE loss,
backward, gradient clipping and an Adam update, exactly as the retrain loop runs it
(``nas.training.Trainer``). FLOPs are counted by ``torch.utils.flop_counter`` on one step;
the machine's float32 (or bf16) matrix-product rate is measured next to it::

    python benchmarks/retrain_step.py --genotype genotypes/mmnas_vqa.json --steps 5
    python benchmarks/retrain_step.py --device cuda --precision bf16 --steps 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import nas.strategies  # noqa: F401  (registrations)
import search_spaces  # noqa: F401
import tasks  # noqa: F401
import search_spaces.mmnas.ops as mmnas_ops
from nas.compile import COMPILE_MODES
from nas.config import TrainConfig
from nas.data import make_loader
from nas.genotype import load_genotype
from nas.heads import FusionHead
from nas.registry import SPACES
from nas.space import fixed_block_factory
from nas.task import TaskMeta
from nas.training import EpochProgress, Trainer


class _Answers:
    """The VQA loss (BCE on soft scores, summed) without reading any dataset."""

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, batch["target"], reduction="sum")


class _Batches:
    """A batch-level dataset of random inputs at the benchmark shape, on the target device."""

    def __init__(self, size: int, tokens: int, regions: int, feature_dim: int, vocab: int, answers: int,
                 device: torch.device) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)
        self.size = size
        self.data = {
            "tokens": torch.randint(1, vocab, (size, tokens), generator=g),
            "features": torch.rand(size, regions, feature_dim, generator=g),
            "boxes": _boxes(size, regions, g),
            "num_regions": torch.full((size,), regions),
            "image_size": torch.tensor([[480, 640]]).repeat(size, 1),
            "target": (torch.rand(size, answers, generator=g) > 0.999).float(),
        }
        self.data = {k: v.to(device) for k, v in self.data.items()}

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, device=self.data["tokens"].device)
        return {k: v[index] for k, v in self.data.items()}


def _boxes(size: int, regions: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(size, regions, 2, generator=g) * torch.tensor([560.0, 400.0])
    wh = 16 + torch.rand(size, regions, 2, generator=g) * 64
    return torch.cat([xy, xy + wh], dim=-1)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of an n x n x n matrix product (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _count_flops(model: torch.nn.Module, config: TrainConfig, device: torch.device, batch: dict) -> int:
    """FLOPs of one step, counted on an uncompiled twin (the counter cannot see into compiled
    graphs); the twin's update touches a copy of the weights only."""
    import copy

    twin = Trainer(copy.deepcopy(model), _Answers(), replace(config, compile="off"), device)
    with FlopCounterMode(display=False) as counter:
        twin.train_epoch([batch], "count", False, EpochProgress())
    return counter.get_total_flops()


def _written_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                       dropout_p: float) -> torch.Tensor:
    # q: (B, h, Lq, d); k, v: (B, h, Lk, d) -> (B, h, Lq, d)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + mask
    return torch.matmul(F.dropout(torch.softmax(scores, dim=-1), dropout_p, True), v)


def _profile(trainer: Trainer, batches: list, rows: int) -> None:
    """Print where one step's time goes, operator by operator (self time, so nothing is counted twice)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        trainer.train_epoch(batches, "profiled", False, EpochProgress())
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genotype", default="genotypes/mmnas_vqa.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=14)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps; their median is reported")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES,
                        help="train.compile: torch.compile the training forward (the first step pays the compile)")
    parser.add_argument("--attention", default="fused", choices=["fused", "written"],
                        help="fused: the ops' scaled_dot_product_attention; written: softmax(QK^T)V step by step")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also profile one more step and print its ROWS most expensive operators")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.attention == "written":
        mmnas_ops._attention = _written_attention
    genotype = load_genotype(args.genotype)
    space_cls = SPACES.get(genotype.space)
    space = space_cls(replace(space_cls.Config(), hidden=args.hidden, **space_cls.config_from_choices(genotype.choices)))
    meta = TaskMeta(vocab_size=20_000, feature_dim=2048, num_outputs=3129)
    model = space.build_model(meta, FusionHead(args.hidden, 512, meta.num_outputs),
                              fixed_block_factory(genotype.choices)).to(device)
    config = TrainConfig(batch_size=args.batch, lr=1e-4, precision=args.precision, device=args.device,
                         compile=args.compile)
    trainer = Trainer(model, _Answers(), config, device)
    data = _Batches(args.batch * (args.steps + 3), args.tokens, args.regions, 2048, meta.vocab_size,
                    meta.num_outputs, device)
    batches = list(make_loader(data, args.batch, shuffle=False, seed=0))

    flops = _count_flops(model, config, device, batches[0])
    _sync(device)
    start = time.perf_counter()
    trainer.train_epoch(batches[1:2], "first step", False, EpochProgress())
    _sync(device)
    first_step = time.perf_counter() - start
    trainer.train_epoch(batches[2:3], "warm-up", False, EpochProgress())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Each step timed on its own: on a shared virtual machine single steps vary by 10-20%,
    # so the median is reported next to the mean.
    step_times = []
    for batch in batches[3:3 + args.steps]:
        _sync(device)
        start = time.perf_counter()
        trainer.train_epoch([batch], "timed", False, EpochProgress())
        _sync(device)
        step_times.append(time.perf_counter() - start)
    step = statistics.median(step_times)
    peak_memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if args.profile:
        _profile(trainer, batches[3 + args.steps - 1:3 + args.steps], args.profile)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    peak = matmul_rate(device, dtype)
    result = {
        "genotype": str(args.genotype), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "precision": args.precision, "compile": args.compile, "attention": args.attention, "batch": args.batch, "regions": args.regions, "tokens": args.tokens,
        "hidden": args.hidden, "parameters": sum(p.numel() for p in model.parameters()),
        "first_step_seconds": round(first_step, 2), "peak_memory_mib": peak_memory and round(peak_memory),
        "step_seconds": round(step, 4), "step_seconds_each": [round(t, 3) for t in step_times], "tflop_per_step": round(flops / 1e12, 4),
        "achieved_gflops": round(flops / step / 1e9, 1), "matmul_gflops": round(peak / 1e9, 1),
        "fraction_of_matmul": round(flops / step / peak, 3), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
