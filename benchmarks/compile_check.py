"""train.compile with the real backend (inductor): outputs and gradients against the plain model.

The test suite checks graph capture with the ``aot_eager`` backend; this runs inductor's generated
kernels (Triton on CUDA, C++ on CPU), which take too long to build for the suite on two cores.
A tiny MmNas model without dropout (so no random draws differ) is run in training mode on batches
of two sizes (the short last batch is a recompile)::

    python benchmarks/compile_check.py --device cuda --mode reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nas.compile import COMPILE_MODES, compile_forward
from nas.data import make_eval_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tiny model and data of the test suite
from tests.test_text_cache import tiny_model, tiny_pairs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="default", choices=COMPILE_MODES[1:])
    args = parser.parse_args()
    device = torch.device(args.device)
    model = tiny_model(dropout=0.0).to(device).train()
    compiled = compile_forward(model, args.mode)
    output_gap, gradient_gap, gradient_scale, seconds = 0.0, 0.0, 0.0, []
    for batch in make_eval_loader(tiny_pairs(), 37):
        batch = {k: v.to(device) for k, v in batch.items()}
        model.zero_grad(set_to_none=True)
        plain = model(batch)
        plain.square().sum().backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = compiled(batch)
        out.square().sum().backward()
        seconds.append(round(time.perf_counter() - start, 2))
        output_gap = max(output_gap, float((out - plain).detach().abs().max() / plain.detach().abs().max()))
        got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == want.keys()
        gradient_gap = max([gradient_gap] + [float((got[n] - want[n]).abs().max()) for n in want])
        gradient_scale = max([gradient_scale] + [float(want[n].abs().max()) for n in want])
    result = {"device": args.device, "mode": args.mode, "batches": len(seconds), "seconds_per_batch": seconds,
              "max_relative_output_gap": output_gap, "max_gradient_gap": gradient_gap,
              "largest_gradient": gradient_scale, "torch": torch.__version__}
    print(json.dumps(result))
    if output_gap > 1e-4 or gradient_gap > 1e-4 * gradient_scale:
        raise SystemExit("compiled and plain results differ")


if __name__ == "__main__":
    main()
