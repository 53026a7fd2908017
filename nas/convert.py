"""Import MmNas's own arch JSON (``{"epoch0": {"enc": [[op], ...], "dec": [...]}}``) as a genotype."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nas.errors import UserError, json_type, shown
from nas.genotype import Genotype
from nas.io import read_json

__all__ = ["convert_mmnas_arch", "MMNAS_OP_NAMES"]

# MmNas names carry the attention head size; ours take it from space.head_dim.
MMNAS_OP_NAMES = {"self_att_64": "self_att", "rel_self_att_64": "rel_self_att", "guided_att_64": "guided_att",
                  "feed_forward": "feed_forward"}


def convert_mmnas_arch(path: str | Path, task: str, epoch: int | None = None,
                       provenance: dict[str, Any] | None = None) -> Genotype:
    """Read an MmNas arch file and return the genotype of one of its epochs (default: the last)."""
    data = read_json(path, "MmNas arch file")
    if not isinstance(data, dict) or not data or not all(re.fullmatch(r"epoch\d{1,9}", k, re.ASCII) for k in data):
        raise UserError(f"{path}: not an MmNas arch file (expected keys epoch0, epoch1, ...)")
    keys = {int(key[5:]): key for key in data}  # "epoch01" is epoch 1 too
    epochs = sorted(keys)
    chosen = epochs[-1] if epoch is None else epoch
    if chosen not in epochs:
        raise UserError(f"{path}: no epoch{chosen}. Available: {', '.join(f'epoch{e}' for e in epochs)}")
    cell = data[keys[chosen]]
    if not isinstance(cell, dict) or set(cell) != {"enc", "dec"}:
        raise UserError(f"{path}: epoch{chosen} must hold exactly the keys 'enc' and 'dec'")
    choices = {}
    for part in ("enc", "dec"):
        if not isinstance(cell[part], list):
            raise UserError(f"{path}: epoch{chosen}.{part} must be a list of blocks, got {json_type(cell[part])}")
        for index, node in enumerate(cell[part]):
            where = f"{path}: epoch{chosen}.{part}[{index}]"
            if not isinstance(node, list) or len(node) != 1:
                raise UserError(f"{where} must list exactly one op (a sum of several ops is not supported), "
                                f"got {shown(node)}")
            name = node[0]
            if not isinstance(name, str) or name not in MMNAS_OP_NAMES:
                raise UserError(f"{where}: unknown MmNas op {shown(name)}. Supported: {', '.join(MMNAS_OP_NAMES)}")
            choices[f"{part}/{index}"] = MMNAS_OP_NAMES[name]
    record = {"source": f"MmNas arch file {Path(path).name}", "source_epoch": chosen}
    record.update(provenance or {})
    return Genotype(space="mmnas", task=task, choices=choices, provenance=record)
