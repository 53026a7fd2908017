"""The genotype: a searched architecture as a versioned, validated JSON contract.

Version 1 is a flat map from block label to the chosen op, in the style of
NNI's samples, plus where it came from and what was measured::

    {"format": "vlnas-genotype", "version": 1,
     "space": "mmnas", "task": "vqa",
     "choices": {"enc/0": "self_att", ..., "dec/17": "feed_forward"},
     "provenance": {"strategy": "mmnas", "seed": 888, "epoch": 12, ...},
     "metrics": {"heldout_accuracy": 61.2}}

It is only ever read with ``json`` and checked field by field; it is never
evaluated or unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nas.errors import UserError, shown
from nas.io import atomic_write_json, read_json

__all__ = ["Genotype", "FORMAT", "VERSION", "load_genotype", "save_genotype", "genotype_from_dict",
           "check_choices", "diff_genotypes"]

FORMAT = "vlnas-genotype"
VERSION = 1
_KEYS = {"format", "version", "space", "task", "choices", "provenance", "metrics"}


@dataclass
class Genotype:
    space: str
    task: str
    choices: dict[str, str]
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "task": self.task,
                "choices": dict(self.choices), "provenance": dict(self.provenance),
                "metrics": dict(self.metrics)}


def genotype_from_dict(data: Any, source: str = "genotype") -> Genotype:
    """Check the structure of a parsed genotype (not yet against a space)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a genotype must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise UserError(f"{source}: 'format' is {shown(data.get('format'))}, expected '{FORMAT}'"
                        " (MmNas arch files can be imported with 'nas genotype convert')")
    version = data.get("version")
    # type() check: JSON true and 1.0 compare equal to 1 but are not a version number.
    if type(version) is not int or version != VERSION:
        raise UserError(f"{source}: unknown genotype version {shown(version)}; this vlnas reads version {VERSION}")
    extra = sorted(set(data) - _KEYS)
    if extra:
        raise UserError(f"{source}: unknown key(s) {', '.join(extra)}. Valid keys: {', '.join(sorted(_KEYS))}")
    for key in ("space", "task"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{source}: '{key}' must be a non-empty string, got {shown(data.get(key))}")
    choices = data.get("choices")
    if not isinstance(choices, dict) or not choices:
        raise UserError(f"{source}: 'choices' must be a non-empty object of label -> op")
    for label, op in choices.items():
        if not isinstance(op, str):
            raise UserError(f"{source}: choices['{label}'] must be an op name (string), got {shown(op)}")
    for key in ("provenance", "metrics"):
        if not isinstance(data.get(key, {}), dict):
            raise UserError(f"{source}: '{key}' must be an object, got {shown(data[key])}")
    return Genotype(space=data["space"], task=data["task"], choices=dict(choices),
                    provenance=dict(data.get("provenance", {})), metrics=dict(data.get("metrics", {})))


def load_genotype(path: str | Path) -> Genotype:
    return genotype_from_dict(read_json(path, "genotype file"), source=str(path))


def save_genotype(genotype: Genotype, path: str | Path) -> Path:
    return atomic_write_json(path, genotype.to_dict())


def check_choices(choices: Mapping[str, str], expected: Mapping[str, list[str]], source: str) -> None:
    """Check a genotype's choices against a space's labelled candidates."""
    missing = [label for label in expected if label not in choices]
    extra = [label for label in choices if label not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing label(s) {_compact(missing)}")
        if extra:
            parts.append(f"unexpected label(s) {_compact(extra)}")
        raise UserError(f"{source}: {'; '.join(parts)}. Expected labels: {_compact(list(expected))}")
    for label, op in choices.items():
        if op not in expected[label]:
            raise UserError(f"{source}: unknown op '{op}' for {label}. Valid ops: {', '.join(expected[label])}")


def diff_genotypes(a: Genotype, b: Genotype) -> list[tuple[str, str | None, str | None]]:
    """Labels whose op differs, as ``(label, op_in_a, op_in_b)``, in label order."""
    labels = list(a.choices) + [label for label in b.choices if label not in a.choices]
    return [(label, a.choices.get(label), b.choices.get(label)) for label in labels
            if a.choices.get(label) != b.choices.get(label)]


def _compact(labels: list[str]) -> str:
    """Shorten ``enc/0, enc/1, ..., enc/11`` to ``enc/0..11`` for readable errors."""
    groups: list[tuple[str, list[int]]] = []
    rest = []
    for label in labels:
        match = re.fullmatch(r"(.*/)(\d{1,9})", label, re.ASCII)  # int() refuses 4300+ digits
        if not match:
            rest.append(label)
            continue
        prefix, index = match.group(1), int(match.group(2))
        if groups and groups[-1][0] == prefix and groups[-1][1][-1] + 1 == index:
            groups[-1][1].append(index)
        else:
            groups.append((prefix, [index]))
    parts = [f"{p}{ix[0]}" if len(ix) == 1 else f"{p}{ix[0]}..{ix[-1]}" for p, ix in groups]
    return ", ".join(parts + rest)
