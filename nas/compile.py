"""``train.compile``: the training forward pass through ``torch.compile``.

Only the forward of the training step is compiled. Evaluation, checkpoints and the weight average
keep using the plain module, which shares its parameters with the compiled one, so checkpoint keys
and resume are the same with or without compiling.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def compile_forward(model: nn.Module, mode: str, backend: str = "inductor") -> Callable[[dict[str, Any]], Any]:
    """``model`` itself for ``mode == "off"``, else a compiled forward taking a batch dict.

    Only the batch's tensors reach the compiled graph: ids and other Python values would become
    guards, and a guard that changes every batch recompiles every batch. Shapes that vary
    (the last short batch, length-grouped region counts) are recompiled once as dynamic.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r} is not one of {COMPILE_MODES}")
    if mode == "off":
        return model
    options = {"mode": mode} if backend == "inductor" else {}
    compiled = torch.compile(model, backend=backend, **options)

    def forward(batch: dict[str, Any]) -> Any:
        return compiled({key: value for key, value in batch.items() if isinstance(value, torch.Tensor)})

    return forward
