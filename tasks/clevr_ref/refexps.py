"""CLEVR-Ref+ expression files: ``refexps/clevr_ref+_{split}_refexps.json``.

``{"refexps": [{refexp, image_index, image_filename, refexp_family_index, program}]}``; a
program is a post-order list of ``{"type", "inputs", "value_inputs"}`` nodes whose last node
holds ``_output``, the 0-based indices of the referred objects (a single index is accepted too).
An expression is numbered by its position in the file (IEP-Ref's ``orig_idxs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.errors import UserError, described
from nas.io import read_json

__all__ = ["Refexp", "read_refexps"]


@dataclass(frozen=True)
class Refexp:
    index: int  # position in the file
    refexp: str
    image_index: int
    family: int  # refexp_family_index
    output: tuple[int, ...]  # the referred objects, sorted, 0-based
    program: list[dict]


def read_refexps(path: str | Path, object_counts: list[int]) -> list[Refexp]:
    """Every expression of a refexps file; ``object_counts[k]`` is image k's number of objects."""
    path = Path(path)
    data = read_json(path, "CLEVR-Ref+ refexps file")
    if not isinstance(data, dict) or not isinstance(data.get("refexps"), list):
        raise UserError(f"{path}: expected an object with a 'refexps' list, got "
                        f"{described(data) if not isinstance(data, dict) else 'keys ' + ', '.join(data)}")
    out = []
    for index, record in enumerate(data["refexps"]):
        where = f"{path}: refexp {index}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object, got {described(record)}")
        for key, kind in (("refexp", str), ("image_index", int), ("program", list)):
            if key not in record:
                raise UserError(f"{where}: no '{key}'")
            if not isinstance(record[key], kind) or isinstance(record[key], bool):
                raise UserError(f"{where}: '{key}' should be a {kind.__name__}, got {described(record[key])}")
        image = record["image_index"]
        if not 0 <= image < len(object_counts):
            raise UserError(f"{where}: image_index {image} is not one of the {len(object_counts)} scenes")
        program = record["program"]
        if not program or not isinstance(program[-1], dict) or "_output" not in program[-1]:
            raise UserError(f"{where}: the program's last node has no '_output' (the referred objects)")
        output = program[-1]["_output"]
        output = [output] if isinstance(output, int) and not isinstance(output, bool) else output
        if not isinstance(output, list) or not output or \
                not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < object_counts[image]
                        for i in output):
            raise UserError(f"{where}: _output {described(program[-1]['_output'])} should list object indices "
                            f"0..{object_counts[image] - 1} of scene {image} (at least one)")
        family = record.get("refexp_family_index", -1)
        if not isinstance(family, int) or isinstance(family, bool):
            raise UserError(f"{where}: 'refexp_family_index' should be an integer, got {described(family)}")
        out.append(Refexp(index, record["refexp"], image, family, tuple(sorted(set(output))), program))
    return out
