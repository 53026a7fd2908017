"""Official NLVR2 accuracy and consistency, reimplemented so that it gives the same numbers.

Source of the rules: lil-lab/nlvr at commit e6a286aa779fcaf6ecd331a42767915d1ae4fbf5,
``nlvr2/eval/metrics.py``:

* A prediction is correct when ``prediction.lower() == label.lower()``, so ``"true"``,
  ``"TRUE"`` and ``True`` all match the label ``"True"``; any other string is simply wrong.
* Accuracy (printed there as "precision") = correct / examples.
* Consistency = the fraction of unique sentences all of whose examples are correct. A
  sentence is the identifier with its pairId blanked: ``dev-850-1-0`` -> ``dev-850--0``, so
  the same sentence written for another image pair of the set is grouped with it, while
  the same sentenceId in another set is a different sentence.

Both are reported in percent, as ``100 * fraction`` of the official fraction (the same
float before scaling). Where the official script prints a list and exits (missing
predictions) or crashes (an unlabeled example, no examples) we raise ``UserError``.
Predictions for identifiers that are not examples are ignored, as there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

from nas.errors import UserError, described
from tasks.nlvr2.annotations import Nlvr2Example, read_annotations
from tasks.nlvr2.predictions import read_predictions

__all__ = ["Nlvr2Scores", "consistency_key", "evaluate_nlvr2_files", "nlvr2_scores"]

# How many offending identifiers an error message lists.
_MAX_SHOWN = 3


@dataclass(frozen=True)
class Nlvr2Scores:
    """Accuracy and consistency in percent, with the counts they come from."""

    accuracy: float
    consistency: float
    num_examples: int
    num_correct: int
    num_sentences: int
    num_consistent: int

    def to_dict(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


def consistency_key(identifier: str) -> str:
    """The sentence an example belongs to: its identifier with the pairId left empty."""
    parts = identifier.split("-")
    parts[2] = ""
    return "-".join(parts)


def _as_text(value: object, identifier: str) -> str:
    # str(True) is "True": a boolean prediction compares like the string a submission holds.
    if isinstance(value, (str, bool)):
        return str(value)
    raise UserError(f"prediction for {identifier!r} must be a string or a boolean, got {described(value)}")


def nlvr2_scores(examples: Sequence[Nlvr2Example], predictions: Mapping[str, str | bool],
                 source: str | None = None) -> Nlvr2Scores:
    """Score predictions (identifier -> "True"/"False"/bool) on labeled examples, as the official script.

    Every example needs a prediction: scoring a subset would report a number that is not
    comparable with anyone else's. ``source`` (the predictions file) starts every error.
    """
    where = f"{source}: " if source else ""
    if not examples:
        raise UserError(f"{where}no NLVR2 examples to score")
    missing = [example.identifier for example in examples if example.identifier not in predictions]
    if missing:
        raise UserError(f"{where}predictions are missing for {len(missing)} of {len(examples)} examples "
                        f"(first: {', '.join(missing[:_MAX_SHOWN])})")
    unlabeled = [example.identifier for example in examples if example.label is None]
    if unlabeled:
        raise UserError(f"{where}{len(unlabeled)} of {len(examples)} examples have no label and cannot be scored "
                        f"(first: {', '.join(unlabeled[:_MAX_SHOWN])})")
    correct = 0
    consistent: dict[str, bool] = {}  # sentence -> every example so far correct
    for example in examples:
        key = consistency_key(example.identifier)
        hit = _as_text(predictions[example.identifier], example.identifier).lower() == str(example.label).lower()
        correct += hit
        consistent[key] = consistent.get(key, True) and hit
    num_consistent = sum(consistent.values())
    return Nlvr2Scores(
        accuracy=100 * (correct / len(examples)),
        consistency=100 * (num_consistent / len(consistent)),
        num_examples=len(examples), num_correct=correct,
        num_sentences=len(consistent), num_consistent=num_consistent)


def evaluate_nlvr2_files(predictions_path: str | Path, annotations_path: str | Path) -> Nlvr2Scores:
    """Score a ``test_predict.csv``-style file against an NLVR2 JSON-lines file, like ``metrics.py``."""
    return nlvr2_scores(read_annotations(annotations_path), read_predictions(predictions_path), str(predictions_path))
