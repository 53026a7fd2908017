"""NLVR2 annotation files as released by lil-lab/nlvr: ``nlvr2/data/{train,dev,test1,test2}.json``.

Despite the ``.json`` name each file is JSON Lines: one example object per line, with the keys
``identifier`` (``split-setId-pairId-sentenceId``), ``sentence``, ``label`` (the *string*
``"True"`` or ``"False"``; unlabeled test files may lack it), ``left_url``, ``right_url``,
``writer``, ``synset``, ``query``, ``validation``, ``extra_validations`` and, in train only,
``directory``. Only the first three matter for training and scoring, so a record keeps just
those plus the two image ids that the pair's features are stored under.

Image ids follow LXMERT's naming of the obj36 TSV rows: the identifier without its sentence id,
then ``-img0`` (left) or ``-img1`` (right), e.g. ``dev-850-0-0`` -> ``dev-850-0-img0``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from nas.errors import UserError, described, shown
from nas.io import atomic_write_jsonl

__all__ = ["IDENTIFIER_FORM", "LABELS", "Nlvr2Example", "parse_identifier", "read_annotations",
           "write_annotations"]

IDENTIFIER_FORM = "split-setId-pairId-sentenceId"
# The file's label strings and the booleans they stand for; nothing else is a label.
LABELS: dict[str, bool] = {"True": True, "False": False}
# Keys a writer fills from the record itself; extra keys may not replace them.
_OWN_KEYS = ("identifier", "sentence", "label")
# ASCII digits only: ``\d`` would accept Arabic-Indic digits, which no NLVR2 file has and which
# would give image ids that match no feature row.
_IDENTIFIER = re.compile(r"([A-Za-z0-9_]+)-([0-9]+)-([0-9]+)-([0-9]+)")


def parse_identifier(identifier: str) -> tuple[str, str, str, str]:
    """``(split, setId, pairId, sentenceId)`` as written, so ids keep any leading zeros.

    Raises ValueError: callers add the file and line, which only they know.
    """
    match = _IDENTIFIER.fullmatch(identifier) if isinstance(identifier, str) else None
    if match is None:
        raise ValueError(f"identifier {shown(identifier)} is not of the form {IDENTIFIER_FORM} "
                         "(e.g. 'dev-850-0-0')")
    split, set_id, pair_id, sentence_id = match.groups()
    return split, set_id, pair_id, sentence_id


@dataclass(frozen=True)
class Nlvr2Example:
    """One sentence paired with one image pair; ``label`` is None where the file has none (test)."""

    identifier: str
    sentence: str
    label: bool | None
    left_image: str = field(init=False)  # LXMERT obj36 row of the left image: "<split>-<set>-<pair>-img0"
    right_image: str = field(init=False)  # and of the right one: "...-img1"

    def __post_init__(self) -> None:
        split, set_id, pair_id, _ = parse_identifier(self.identifier)
        if not isinstance(self.sentence, str):
            raise TypeError(f"{self.identifier}: sentence must be a string, got {described(self.sentence)}")
        if self.label is not None and not isinstance(self.label, bool):
            raise TypeError(f"{self.identifier}: label must be a boolean or None, got {described(self.label)}")
        pair = f"{split}-{set_id}-{pair_id}"
        object.__setattr__(self, "left_image", f"{pair}-img0")
        object.__setattr__(self, "right_image", f"{pair}-img1")


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def read_annotations(path: str | Path) -> list[Nlvr2Example]:
    """Every example of one NLVR2 file, in file order, refusing anything the metric could misread.

    The official evaluator would crash with a traceback (or silently keep the last of two
    duplicate identifiers); here each problem is one line naming the file, line, key and value.
    Blank lines are skipped, so a trailing empty line is harmless.
    """
    path = Path(path)
    examples: list[Nlvr2Example] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(_read_text(path, "NLVR2 annotation file").split("\n"), start=1):
        if not text.strip():
            continue
        where = f"{path}, line {number}"
        example = _parse_line(text, where)
        if example.identifier in first_line:
            raise UserError(f"{where}: 'identifier' {example.identifier!r} already appeared on line "
                            f"{first_line[example.identifier]}")
        first_line[example.identifier] = number
        examples.append(example)
    if not examples:
        raise UserError(f"{path}: NLVR2 annotation file has no examples")
    return examples


def _read_text(path: Path, what: str) -> str:
    """The whole file as text, with the usual failures as one-line errors."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror or error})") from None


def _parse_line(text: str, where: str) -> Nlvr2Example:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error.msg} at column {error.colno}): {shown(text)}") from None
    except (RecursionError, ValueError):  # "[[[[..." too deep, or an int of more than 4300 digits
        raise UserError(f"{where}: JSON that cannot be read: {shown(text)}") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {described(record)}")
    for key in ("identifier", "sentence"):
        if key not in record:
            raise UserError(f"{where}: no key '{key}'")
        if not isinstance(record[key], str):
            raise UserError(f"{where}: '{key}' must be a string, got {described(record[key])}")
    try:
        parse_identifier(record["identifier"])
    except ValueError:
        raise UserError(f"{where}: 'identifier' {shown(record['identifier'])} is not of the form "
                        f"{IDENTIFIER_FORM} (e.g. 'dev-850-0-0')") from None
    return Nlvr2Example(record["identifier"], record["sentence"], _label(record, where))


def _label(record: Mapping[str, Any], where: str) -> bool | None:
    if "label" not in record:
        return None
    value = record["label"]
    # Exactly these two strings: a JSON boolean or "true" would be read differently by other tools.
    if isinstance(value, str) and value in LABELS:
        return LABELS[value]
    raise UserError(f"{where}: 'label' must be the string \"True\" or \"False\", got {described(value)}")


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def write_annotations(path: str | Path, examples: Iterable[Nlvr2Example],
                      extra: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write examples as an NLVR2 JSON-lines file that :func:`read_annotations` reads back unchanged.

    Args:
        path: target file; replaced atomically, so a reader never sees half of it.
        examples: written in this order; an unlabeled example gets no ``label`` key, as in test2.
        extra: optional per-identifier keys (``left_url``, ``synset``...) for tools that want a file
            shaped like the release; they may not replace identifier, sentence or label.
    """
    extra = extra or {}
    records = []
    seen: set[str] = set()
    for example in examples:
        if example.identifier in seen:
            raise ValueError(f"{path}: identifier {example.identifier!r} given twice")
        seen.add(example.identifier)
        record: dict[str, Any] = {"identifier": example.identifier, "sentence": example.sentence}
        if example.label is not None:
            record["label"] = "True" if example.label else "False"
        more = extra.get(example.identifier, {})
        clash = sorted(set(more) & set(_OWN_KEYS))
        if clash:
            raise ValueError(f"{path}: extra keys for {example.identifier!r} would replace {clash}")
        record.update(more)
        records.append(record)
    unknown = sorted(set(extra) - seen)
    if unknown:
        raise ValueError(f"{path}: extra keys given for identifiers that are not examples: {unknown[:3]}")
    return atomic_write_jsonl(path, records)
