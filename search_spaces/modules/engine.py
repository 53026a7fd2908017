"""IEP's execution engine: a stem, one residual neural module per program function, a classifier.

Each program-function token (``scene``, ``filter_color[red]``, ``relate[left]``, ...) has its own
module, as IEP gives value-dependent functions one module per value. A module is IEP's residual
block with a searched body: ``relu(x + cell(x))`` where ``cell`` runs the ops at ``cell/0``,
``cell/1``, ... with a ReLU between them (IEP: conv3x3, ReLU, conv3x3). A binary function first
projects its two inputs, concatenated, with a 1x1 conv and a ReLU (IEP's ``ConcatBlock``).
``scene`` takes no input; its module reads the stem's map.

A program (``<START>`` prefix-order ids ``<END>``) is executed with a stack, read right to left:
a function pops its inputs (the first popped is its first argument) and pushes its output; the
value left on top is the program's. Predicted programs can be malformed: tokens after ``<END>``,
special tokens and ``<UNK>`` are skipped, a missing input is the stem's map and an empty program
is the stem's map. The nodes of a whole batch are then run level by level (leaves first), every
node of a level that calls the same module in one call. The classifier turns the result into one
logit per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tasks.clevr_ref.programs import END, NULL, SPECIALS, arity

__all__ = ["STEM", "Node", "ExecutionEngine", "parse_program"]

STEM = -1  # a node input that is the stem's map
_FIRST = len(SPECIALS)  # program-token id of module 0


@dataclass(frozen=True)
class Node:
    module: int  # index of the function's module (program-token id - 4)
    inputs: tuple[int, ...]  # node indices (in this list) or STEM


def parse_program(ids: Sequence[int], arities: Sequence[int]) -> tuple[list[Node], int]:
    """The nodes of one program, children before parents, and the index of its result (or STEM)."""
    tokens = []
    for token in ids:
        if token in (END, NULL):
            break
        if token >= _FIRST:
            tokens.append(token - _FIRST)
    nodes: list[Node] = []
    stack: list[int] = []
    for module in reversed(tokens):
        count = arities[module]
        inputs = tuple(stack.pop() if stack else STEM for _ in range(count)) if count else (STEM,)
        nodes.append(Node(module, inputs))
        stack.append(len(nodes) - 1)
    return nodes, stack[-1] if stack else STEM


class ExecutionEngine(nn.Module):
    """Args:
        feature_dim: channels C of the grid features.
        dim: the modules' channels.
        stem_layers: 3x3 conv + ReLU layers of the stem.
        tokens: the program vocabulary's function tokens, in id order after the four specials.
        cells: the blocks at ``cell/0``, ``cell/1``, ...; each is called ``block(x, module)``.
        classifier_dim: hidden channels of the per-cell classifier.
        coords: add two coordinate channels (x, y in [-1, 1]) to the features, so modules can tell
            left from right on features that do not encode position.
    """

    def __init__(self, feature_dim: int, dim: int, stem_layers: int, tokens: list[str], cells: list[nn.Module],
                 classifier_dim: int, coords: bool = True) -> None:
        super().__init__()
        self.coords = coords
        layers: list[nn.Module] = []
        width = feature_dim + (2 if coords else 0)
        for _ in range(stem_layers):
            layers += [nn.Conv2d(width, dim, 3, padding=1), nn.ReLU()]
            width = dim
        self.stem = nn.Sequential(*layers)
        self.arities = [arity(token) for token in tokens]
        self.cells = nn.ModuleList(cells)
        binary = [m for m, count in enumerate(self.arities) if count == 2]
        self.project_index = {m: i for i, m in enumerate(binary)}
        self.project = nn.ModuleList(nn.Conv2d(2 * dim, dim, 1) for _ in binary)
        self.classifier = nn.Sequential(nn.Conv2d(dim, classifier_dim, 1), nn.ReLU(), nn.Conv2d(classifier_dim, 1, 1))

    def run_module(self, module: int, inputs: list[torch.Tensor]) -> torch.Tensor:
        # inputs: one or two (G, D, H, W) maps -> (G, D, H, W)
        x = inputs[0] if len(inputs) == 1 else F.relu(self.project[self.project_index[module]](torch.cat(inputs, 1)))
        out = x
        for position, cell in enumerate(self.cells):
            out = cell(out, module)
            if position < len(self.cells) - 1:
                out = F.relu(out)
        return F.relu(x + out)

    def forward(self, grid: torch.Tensor, programs: torch.Tensor) -> torch.Tensor:
        # grid: (B, C, H, W) features; programs: (B, P) ids -> (B, H*W) cell logits
        if self.coords:
            rows, cols = grid.shape[2:]
            ys = torch.linspace(-1, 1, rows, device=grid.device, dtype=grid.dtype).view(1, 1, rows, 1)
            xs = torch.linspace(-1, 1, cols, device=grid.device, dtype=grid.dtype).view(1, 1, 1, cols)
            count = grid.shape[0]
            grid = torch.cat([grid, xs.expand(count, 1, rows, cols), ys.expand(count, 1, rows, cols)], 1)
        stem = self.stem(grid)  # (B, D, H, W)
        results = self.execute(stem, programs)
        return self.classifier(results).flatten(1)  # (B, H*W)

    def execute(self, stem: torch.Tensor, programs: torch.Tensor) -> torch.Tensor:
        """Every program's result map (B, D, H, W), its modules applied to ``stem``."""
        nodes: list[tuple[int, Node]] = []  # (example, node) with batch-wide input indices
        roots: list[int] = []
        for example, ids in enumerate(programs.tolist()):
            parsed, root = parse_program(ids, self.arities)
            offset = len(nodes)
            nodes += [(example, Node(n.module, tuple(i + offset if i != STEM else STEM for i in n.inputs)))
                      for n in parsed]
            roots.append(root + offset if root != STEM else STEM)
        height = []
        for _, node in nodes:  # children come first, so their heights are known
            height.append(1 + max((height[i] for i in node.inputs if i != STEM), default=-1))
        values: list[torch.Tensor | None] = [None] * len(nodes)

        def value(index: int, example: int) -> torch.Tensor:
            return stem[example] if index == STEM else values[index]

        levels: dict[tuple[int, int], list[int]] = {}
        for index, (_, node) in enumerate(nodes):
            levels.setdefault((height[index], node.module), []).append(index)
        for (_, module), members in sorted(levels.items()):
            inputs = [torch.stack([value(nodes[i][1].inputs[k], nodes[i][0]) for i in members])
                      for k in range(len(nodes[members[0]][1].inputs))]
            out = self.run_module(module, inputs)  # (G, D, H, W)
            for row, index in enumerate(members):
                values[index] = out[row]
        return torch.stack([value(root, example) for example, root in enumerate(roots)])
