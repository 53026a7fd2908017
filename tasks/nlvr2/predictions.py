"""NLVR2 prediction files: ``test_predict.csv``, the format of LXMERT's ``dump_result``.

One line per example, ``identifier,True`` or ``identifier,False``, no header, in the order of
the examples. The official ``metrics.py`` reads it back by splitting each line at commas and
comparing the second field in lower case.

Writing refuses an incomplete or foreign set of predictions before touching the disk: a
submission that silently lacks examples scores as if they were wrong, and a leftover partial
file could be uploaded by mistake. The write itself is atomic.

Reading is stricter than ``metrics.py``, which takes any second field and keeps the last of
two lines for one identifier: here each line must be an identifier and ``true``/``false`` in
any case, once per identifier, and anything else is a one-line error naming the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nas.errors import UserError, described, shown
from nas.io import atomic_write_text
from tasks.nlvr2.annotations import IDENTIFIER_FORM, Nlvr2Example, _read_text, parse_identifier

__all__ = ["SUBMISSION_NAME", "read_predictions", "write_predictions"]

SUBMISSION_NAME = "test_predict.csv"
_MAX_SHOWN = 3
_VALUES = {"true": True, "false": False}


def write_predictions(path: str | Path, examples: Sequence[Nlvr2Example], predictions: Mapping[str, bool]) -> Path:
    """Write one ``identifier,True|False`` line per example, or nothing at all if any is missing.

    Args:
        path: the file to write, usually ``<out>/test_predict.csv``.
        examples: the split's examples; they fix the line order.
        predictions: identifier -> predicted label (bool or numpy bool), exactly one per example.
    """
    path = Path(path)
    known = {example.identifier for example in examples}
    missing = [example.identifier for example in examples if example.identifier not in predictions]
    if missing:
        raise UserError(f"{path}: not written: predictions are missing for {len(missing)} of {len(examples)} "
                        f"examples (first: {', '.join(missing[:_MAX_SHOWN])})")
    foreign = [identifier for identifier in predictions if identifier not in known]
    if foreign:
        raise UserError(f"{path}: not written: {len(foreign)} predictions are for identifiers that are not "
                        f"examples (first: {', '.join(map(shown, foreign[:_MAX_SHOWN]))})")
    lines = []
    for example in examples:
        value = predictions[example.identifier]
        # Not bool(value): an int, a string "False" or a float score would be silently truthy.
        if not isinstance(value, (bool, np.bool_)):
            raise UserError(f"{path}: not written: prediction for {example.identifier!r} must be a boolean, "
                            f"got {described(value)}")
        lines.append(f"{example.identifier},{'True' if value else 'False'}\n")
    return atomic_write_text(path, "".join(lines))


def read_predictions(path: str | Path) -> dict[str, bool]:
    """identifier -> predicted label, from a ``test_predict.csv``-style file; blank lines are skipped."""
    path = Path(path)
    predictions: dict[str, bool] = {}
    first_line: dict[str, int] = {}
    for number, text in enumerate(_read_text(path, "NLVR2 predictions file").split("\n"), start=1):
        line = text.strip()  # as metrics.py does, so "\r" line ends and trailing spaces are harmless
        if not line:
            continue
        where = f"{path}, line {number}"
        fields = line.split(",")
        if len(fields) != 2:
            raise UserError(f"{where}: expected 'identifier,True' or 'identifier,False', got {shown(line)}")
        identifier, value = fields
        try:
            parse_identifier(identifier)
        except ValueError:
            raise UserError(f"{where}: identifier {shown(identifier)} is not of the form {IDENTIFIER_FORM} "
                            "(e.g. 'dev-850-0-0')") from None
        if value.lower() not in _VALUES:
            raise UserError(f"{where}: prediction for {identifier!r} must be True or False, got {shown(value)}")
        if identifier in first_line:
            raise UserError(f"{where}: identifier {identifier!r} already appeared on line {first_line[identifier]}")
        first_line[identifier] = number
        predictions[identifier] = _VALUES[value.lower()]
    return predictions
