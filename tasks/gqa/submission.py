"""GQA's submission file: ``[{"questionId": str, "prediction": str}]``, every question once.

The evaluation server scores ``submission_all_questions.json`` (about 4.2M questions), so a
file that misses any question is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from nas.errors import UserError, described
from nas.io import atomic_write_json, read_json
from nas.task import check_complete

__all__ = ["write_submission", "read_predictions"]


def write_submission(path: str | Path, predictions: Mapping[str, str], question_ids: Iterable[str]) -> Path:
    """Write the predictions for ``question_ids`` (in that order); refuse if any is missing or extra."""
    path, order = Path(path), list(question_ids)
    check_complete(path, list(predictions), order, "question")
    bad = next((qid for qid in order if not isinstance(predictions[qid], str)), None)
    if bad is not None:
        raise UserError(f"{path}: question {bad!r} has a non-string prediction {described(predictions[bad])}")
    return atomic_write_json(path, [{"questionId": qid, "prediction": predictions[qid]} for qid in order], indent=None)


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read a submission file back into question id -> prediction."""
    document = read_json(path, "GQA predictions file")
    if not isinstance(document, list):
        raise UserError(f"{path}: expected a list of {{questionId, prediction}}, got {described(document)}")
    predictions: dict[str, str] = {}
    for index, item in enumerate(document):
        if not isinstance(item, dict) or not isinstance(item.get("questionId"), str) \
                or not isinstance(item.get("prediction"), str):
            raise UserError(f"{path}: item {index} must be {{\"questionId\": string, \"prediction\": string}}, "
                            f"got {described(item)}")
        if item["questionId"] in predictions:
            raise UserError(f"{path}: question {item['questionId']!r} is predicted twice (item {index})")
        predictions[item["questionId"]] = item["prediction"]
    return predictions
