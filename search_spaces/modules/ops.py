"""The searchable cell's candidate ops, each a bank of one op per neural module.

Every program function (``filter_color[red]``, ``relate[left]``, ...) has its own module with its
own weights, as in IEP; the cell's architecture (which op at ``cell/0``, ``cell/1``, ...) is shared
by all of them. So a candidate op holds one instance per module and its forward takes the
module's index: ``op(x, module)``. One block per label then serves every module, and a
strategy's mixed op forwards ``(x, module)`` to each candidate unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["CELL_OPS", "PARAMETER_FREE", "SHORT_NAMES", "OpBank", "make_op"]


def _conv3x3(dim: int) -> nn.Module:
    return nn.Conv2d(dim, dim, 3, padding=1)


def _conv1x1(dim: int) -> nn.Module:
    return nn.Conv2d(dim, dim, 1)


def _dil_conv3x3(dim: int) -> nn.Module:
    return nn.Conv2d(dim, dim, 3, padding=2, dilation=2)  # a 5x5 reach with 3x3 weights


def _sep_conv3x3(dim: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, dim, 1))


CELL_OPS: dict[str, Callable[[int], nn.Module] | None] = {
    "conv3x3": _conv3x3,  # IEP's residual module: conv3x3 -> ReLU -> conv3x3
    "conv1x1": _conv1x1,
    "dil_conv3x3": _dil_conv3x3,
    "sep_conv3x3": _sep_conv3x3,
    "identity": None,
}
PARAMETER_FREE = frozenset({"identity"})
SHORT_NAMES = {"conv3x3": "C3", "conv1x1": "C1", "dil_conv3x3": "D3", "sep_conv3x3": "S3", "identity": "-"}


class OpBank(nn.Module):
    """One op of a kind per neural module; ``forward(x, module)`` runs module ``module``'s op.

    Args:
        name: a key of ``CELL_OPS``.
        dim: the modules' channel count.
        modules: how many neural modules there are.
    """

    def __init__(self, name: str, dim: int, modules: int) -> None:
        super().__init__()
        self.name = name
        build = CELL_OPS[name]
        self.ops = nn.ModuleList(build(dim) for _ in range(modules)) if build is not None else None

    def forward(self, x: torch.Tensor, module: int) -> torch.Tensor:
        # x: (B, D, H, W) -> (B, D, H, W)
        return x if self.ops is None else self.ops[module](x)


def make_op(name: str, dim: int, modules: int) -> nn.Module:
    return OpBank(name, dim, modules)
