"""Official VQA v2 accuracy, reimplemented so that it gives the same numbers.

Source of the rules: GT-Vision-Lab/VQA at commit
a013f0043c1e2cdc995922dfe257f7149aa9af06:
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (``VQAEval.evaluate`` and
``setAccuracy``) and ``PythonHelperTools/vqaTools/vqa.py`` (``VQA.loadRes``).
``benchmarks/vqa_eval_parity.py`` compares this module with a Python-3 copy of
that file on random adversarial inputs.

Per question, as the official code does it:

1. ``\\n`` and ``\\t`` become spaces and every answer is ``strip()``-ed.
2. Only if the stripped GT answers are not all identical are the GT answers
   and the prediction normalised (``answer_norm.normalize_answer``); a
   unanimous question is compared on the raw stripped strings.
3. For each GT answer dict, the "others" are all answer dicts *not equal to it
   as whole dicts* (after step 1-2), so exact duplicate dicts leave together.
   ``acc = min(1, matches / 3)``, and the question's accuracy is their mean.
4. Overall and per-type accuracies are ``round(100 * mean, 2)`` of the
   unrounded per-question values; per-question values are
   ``round(100 * acc, 2)``.

Sums are taken with the same operand types and order as the official code, so
the floating-point result is bit-identical under the same interpreter.

We match a Python-3 run of the official file. The unmodified Python 2 run
gives the same numbers on ASCII input, but differs in two rare places:
``round`` at exact binary ties (5.625 -> 5.62 here, 5.63 in Python 2) and
non-ASCII text (Unicode digits for ``\\d``, ``"İ".lower()``, final sigma).

Where the official code would crash or silently pick one of two entries
(duplicate ids, missing keys, non-string answers, no GT answers) we raise
``UserError`` instead, with one line naming the file and the bad entry.
``evaluate_vqa_files`` also checks that the questions file covers the
annotated questions, which the official code does not.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from nas.errors import UserError
from tasks.vqa.answer_norm import normalize_answer

__all__ = [
    "VqaScores",
    "evaluate_vqa",
    "evaluate_vqa_files",
    "load_json_file",
    "score_answer",
]

# Decimal places of every reported accuracy (official `VQAEval(..., n=2)`).
_DECIMALS = 2
# How many offending ids an error message lists.
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class VqaScores:
    """Accuracies in percent, rounded like the official evaluator."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float]
    num_questions: int

    def to_dict(self) -> dict:
        """Plain dict for JSON; ``json.dump`` turns question-id keys into strings."""
        return {
            "overall": self.overall,
            "per_answer_type": dict(self.per_answer_type),
            "per_question_type": dict(self.per_question_type),
            "per_question": dict(self.per_question),
            "num_questions": self.num_questions,
        }


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------

def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def score_answer(prediction: str, gt_answers: list[dict]) -> float:
    """Accuracy in [0, 1] of one prediction against one question's GT answer dicts.

    ``gt_answers`` are the annotation's ``answers`` entries (dicts with at least
    ``"answer"``); they are not modified.
    """
    if not gt_answers:
        raise ValueError("score_answer needs at least one ground-truth answer")
    texts = [_clean(entry["answer"]) for entry in gt_answers]
    pred = _clean(prediction)
    if len(set(texts)) > 1:
        texts = [normalize_answer(text) for text in texts]
        pred = normalize_answer(pred)

    # The official code rewrites the dicts in place and leaves out every dict
    # equal to the held-out one, so whole dicts are compared with their
    # processed answer. Only dicts whose answer matches can change the count.
    matching = [dict(entry, answer=text) for entry, text in zip(gt_answers, texts)
                if text == pred]
    per_annotator = []
    for entry, text in zip(gt_answers, texts):
        if text == pred:
            held_out = dict(entry, answer=text)
            matches = sum(1 for other in matching if other != held_out)
        else:
            matches = len(matching)
        # min(1, float) keeps the official mix of int 1 and floats; the types
        # matter to sum() on Python >= 3.12 (compensated float summation).
        per_annotator.append(min(1, matches / 3))
    return float(sum(per_annotator)) / len(per_annotator)


def _percent(values: Sequence[float]) -> float:
    # Same expression as the official setAccuracy, evaluated left to right.
    return round(100 * float(sum(values)) / len(values), _DECIMALS)


# --------------------------------------------------------------------------
# Validation (messages are single lines naming the source and the entry)
# --------------------------------------------------------------------------

def _examples(ids: Iterable[Any]) -> str:
    try:
        shown = sorted(ids)[:_MAX_EXAMPLES]
    except TypeError:  # mixed types in a caller-supplied question_ids list
        shown = sorted(ids, key=repr)[:_MAX_EXAMPLES]
    return ", ".join(repr(qid) if isinstance(qid, str) else str(qid) for qid in shown)


def _ids_phrase(count: int) -> str:
    return f"{count} question id" if count == 1 else f"{count} question ids"


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean",
             int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_question_id(value: Any, where: str) -> int:
    # bool is an int subclass and True == 1 would silently match question 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: 'question_id' must be an integer, got {_type_name(value)} "
                        f"{value!r}")
    return value


def _index_annotations(annotations: Any, source: str) -> dict[int, Mapping]:
    if not isinstance(annotations, list):
        raise UserError(f"{source}: 'annotations' must be a list of objects, "
                        f"got {_type_name(annotations)}")
    if not annotations:
        raise UserError(f"{source}: 'annotations' is empty — there is nothing to evaluate")
    by_id: dict[int, Mapping] = {}
    for index, ann in enumerate(annotations):
        where = f"{source}: annotation {index}"
        if not isinstance(ann, dict):
            raise UserError(f"{where} must be an object, got {_type_name(ann)}")
        if "question_id" not in ann:
            raise UserError(f"{where} has no key 'question_id'")
        qid = _check_question_id(ann["question_id"], where)
        if qid in by_id:
            raise UserError(f"{source}: question id {qid} appears more than once in the "
                            f"annotations (again at annotation {index})")
        _check_annotation_fields(ann, f"{source}: question {qid}")
        by_id[qid] = ann
    return by_id


def _check_annotation_fields(ann: Mapping, where: str) -> None:
    for key in ("question_type", "answer_type"):
        if key not in ann:
            raise UserError(f"{where} has no key {key!r}")
        if not isinstance(ann[key], str):
            raise UserError(f"{where}: {key!r} must be a string, got {_type_name(ann[key])} "
                            f"{ann[key]!r}")
    if "answers" not in ann:
        raise UserError(f"{where} has no key 'answers'")
    answers = ann["answers"]
    if not isinstance(answers, list):
        raise UserError(f"{where}: 'answers' must be a list of objects, got "
                        f"{_type_name(answers)}")
    # Fewer or more than 10 answers is accepted, as the official code does; an
    # empty list would make it divide by zero.
    if not answers:
        raise UserError(f"{where}: 'answers' is empty — each question needs at least one "
                        "ground-truth answer")
    for k, entry in enumerate(answers):
        if not isinstance(entry, dict) or "answer" not in entry:
            raise UserError(f"{where}: answers[{k}] must be an object with key 'answer'")
        if not isinstance(entry["answer"], str):
            raise UserError(f"{where}: answers[{k}]['answer'] must be a string, got "
                            f"{_type_name(entry['answer'])} {entry['answer']!r}")


def _index_results(results: Any, source: str, annotation_ids: Iterable[int],
                   annotations_source: str) -> dict[int, str]:
    if not isinstance(results, list):
        raise UserError(f"{source}: must be a JSON list of "
                        f'{{"question_id": int, "answer": str}} objects, got '
                        f"a JSON {_type_name(results)}")
    answers: dict[int, str] = {}
    first_entry: dict[int, int] = {}
    for index, entry in enumerate(results):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be an object, got {_type_name(entry)}")
        for key in ("question_id", "answer"):
            if key not in entry:
                raise UserError(f"{where} has no key {key!r}")
        qid = _check_question_id(entry["question_id"], where)
        if not isinstance(entry["answer"], str):
            raise UserError(f"{where} (question id {qid}): 'answer' must be a string, got "
                            f"{_type_name(entry['answer'])} {entry['answer']!r}")
        if qid in answers:
            raise UserError(f"{source}: question id {qid} has more than one result "
                            f"(entries {first_entry[qid]} and {index}) — give exactly one "
                            "answer per question")
        answers[qid] = entry["answer"]
        first_entry[qid] = index
    _check_same_ids(set(answers), set(annotation_ids), source, annotations_source)
    return answers


def _check_same_ids(result_ids: set[int], annotation_ids: set[int], source: str,
                    annotations_source: str) -> None:
    # VQA.loadRes asserts exactly this set equality.
    missing = annotation_ids - result_ids
    if missing:
        raise UserError(f"{source}: {_ids_phrase(len(missing))} missing from the results "
                        f"(e.g. {_examples(missing)}) — a result file must cover every "
                        f"question in {annotations_source}")
    extra = result_ids - annotation_ids
    if extra:
        raise UserError(f"{source}: {_ids_phrase(len(extra))} not in "
                        f"{annotations_source} (e.g. {_examples(extra)}) — results must "
                        "come from the same split as the annotations")


def _select_ids(question_ids: Sequence[int] | None, by_id: Mapping[int, Any],
                annotations_source: str) -> list[int]:
    if question_ids is None:
        return list(by_id)
    chosen = list(question_ids)
    if not chosen:
        raise UserError("question_ids is empty — there is nothing to evaluate")
    unknown = [qid for qid in chosen if qid not in by_id]
    if unknown:
        raise UserError(f"question_ids: {_ids_phrase(len(unknown))} not in {annotations_source} "
                        f"(e.g. {_examples(unknown)})")
    repeated = [qid for qid, n in Counter(chosen).items() if n > 1]
    if repeated:
        # The official code would score such a question twice, the second
        # time on answers it had already normalised in place.
        raise UserError(f"question_ids: ids listed more than once (e.g. {_examples(repeated)})")
    return chosen


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def evaluate_vqa(annotations: list[dict], results: list[dict],
                 question_ids: list[int] | None = None) -> VqaScores:
    """Official VQA accuracy of ``results`` against the ``annotations`` entries.

    Args:
        annotations: the ``annotations`` list of a VQA annotation file.
        results: ``[{"question_id": int, "answer": str}, ...]`` covering every
            annotated question (the official ``loadRes`` rule).
        question_ids: evaluate only these, in this order (default: all, in
            annotation order; the order only affects the last float bit).
    """
    return _evaluate(annotations, results, question_ids,
                     annotations_source="annotations", results_source="results")


def _evaluate(annotations: Any, results: Any, question_ids: Sequence[int] | None, *,
              annotations_source: str, results_source: str) -> VqaScores:
    by_id, predictions = _validate(annotations, results, annotations_source, results_source)
    chosen = _select_ids(question_ids, by_id, annotations_source)
    return _accuracies(by_id, predictions, chosen)


def _validate(annotations: Any, results: Any, annotations_source: str,
              results_source: str) -> tuple[dict[int, Mapping], dict[int, str]]:
    by_id = _index_annotations(annotations, annotations_source)
    predictions = _index_results(results, results_source, by_id, annotations_source)
    return by_id, predictions


def _accuracies(by_id: Mapping[int, Mapping], predictions: Mapping[int, str],
                chosen: Sequence[int]) -> VqaScores:
    overall: list[float] = []
    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    per_question: dict[int, float] = {}
    for qid in chosen:
        ann = by_id[qid]
        acc = score_answer(predictions[qid], ann["answers"])
        overall.append(acc)
        by_question_type.setdefault(ann["question_type"], []).append(acc)
        by_answer_type.setdefault(ann["answer_type"], []).append(acc)
        per_question[qid] = round(100 * acc, _DECIMALS)

    return VqaScores(
        overall=_percent(overall),
        per_answer_type={key: _percent(vals) for key, vals in by_answer_type.items()},
        per_question_type={key: _percent(vals) for key, vals in by_question_type.items()},
        per_question=per_question,
        num_questions=len(chosen),
    )


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def load_json_file(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; any failure is a one-line ``UserError`` naming ``path``.

    ``what`` says which input this is (e.g. ``"results"``) for the message.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected the {what} JSON file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} file ({err.strerror or err})") from None
    try:
        # Bytes input lets json detect UTF-8 (with or without BOM), -16 and -32.
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: {what} file is not valid JSON: {err.msg} at line "
                        f"{err.lineno} column {err.colno}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: {what} file is not UTF-8 text (bad byte at offset "
                        f"{err.start})") from None
    except RecursionError:
        raise UserError(f"{path}: {what} file is nested too deeply to parse") from None


def _list_under_key(document: Any, key: str, path: str | os.PathLike, what: str) -> list:
    if not isinstance(document, dict):
        raise UserError(f"{path}: the {what} file must be a JSON object with key {key!r}, "
                        f"got a JSON {_type_name(document)}")
    if key not in document:
        raise UserError(f"{path}: the {what} file has no key {key!r} "
                        f"(keys: {', '.join(sorted(map(str, document))) or 'none'})")
    value = document[key]
    if not isinstance(value, list):
        raise UserError(f"{path}: {key!r} must be a list, got {_type_name(value)}")
    return value


def _index_questions(questions: list, path: str | os.PathLike) -> dict[int, Mapping]:
    by_id: dict[int, Mapping] = {}
    for index, question in enumerate(questions):
        where = f"{path}: question {index}"
        if not isinstance(question, dict) or "question_id" not in question:
            raise UserError(f"{where} must be an object with key 'question_id'")
        by_id[_check_question_id(question["question_id"], where)] = question
    return by_id


def _check_questions_cover(question_by_id: Mapping[int, Any], annotation_ids: Iterable[int],
                           questions_path: str | os.PathLike,
                           annotations_path: str | os.PathLike) -> None:
    # Not checked by the official code, but a question file from another split
    # is always a wrong argument.
    absent = [qid for qid in annotation_ids if qid not in question_by_id]
    if absent:
        raise UserError(f"{questions_path}: {_ids_phrase(len(absent))} of {annotations_path} "
                        f"not in this questions file (e.g. {_examples(absent)}) — "
                        "questions and annotations must be the same split")


def _check_multiple_choice(document: Mapping, question_by_id: Mapping[int, Mapping],
                           results: list, questions_path: str | os.PathLike,
                           results_path: str | os.PathLike) -> None:
    # loadRes rule for the (VQA v1) multiple-choice task.
    if document.get("task_type") != "Multiple Choice":
        return
    for index, entry in enumerate(results):
        question = question_by_id[entry["question_id"]]
        choices = question.get("multiple_choices")
        if not isinstance(choices, list):
            raise UserError(f"{questions_path}: question {entry['question_id']} has no "
                            "'multiple_choices' list although task_type is 'Multiple Choice'")
        if entry["answer"] not in choices:
            raise UserError(f"{results_path}: entry {index} (question id "
                            f"{entry['question_id']}): answer {entry['answer']!r} is not one "
                            f"of the multiple choices in {questions_path}")


def evaluate_vqa_files(questions_path: str | os.PathLike, annotations_path: str | os.PathLike,
                       results_path: str | os.PathLike) -> VqaScores:
    """Evaluate an on-disk result file exactly as ``vqaEvalDemo.py`` would.

    Args:
        questions_path: questions JSON (object with key ``questions``).
        annotations_path: annotations JSON (object with key ``annotations``).
        results_path: JSON list of ``{"question_id": int, "answer": str}``.
    """
    questions_doc = load_json_file(questions_path, "questions")
    annotations_doc = load_json_file(annotations_path, "annotations")
    results = load_json_file(results_path, "results")

    annotations = _list_under_key(annotations_doc, "annotations", annotations_path, "annotations")
    question_by_id = _index_questions(
        _list_under_key(questions_doc, "questions", questions_path, "questions"), questions_path)
    by_id, predictions = _validate(annotations, results, str(annotations_path), str(results_path))
    _check_questions_cover(question_by_id, by_id, questions_path, annotations_path)
    _check_multiple_choice(questions_doc, question_by_id, results, questions_path, results_path)
    return _accuracies(by_id, predictions, list(by_id))
