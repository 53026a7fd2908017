"""GQA question files: one JSON object mapping question-id strings to question records.

``{split}_balanced_questions.json`` and ``*_all_questions.json`` share the layout
(FORMATS.md section 3). Test, challenge and submission files have no answer-side fields,
so ``answer`` and ``structural`` may be missing; everything else a record needs is checked
here, once, with the question id and key named in the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nas.errors import UserError, described
from nas.io import read_json

__all__ = ["GqaQuestion", "Operation", "load_questions", "parse_questions"]


@dataclass(frozen=True)
class Operation:
    """One step of the question's functional program (``semantic``)."""

    operation: str
    dependencies: tuple[int, ...]
    argument: str


@dataclass(frozen=True)
class GqaQuestion:
    question_id: str
    image_id: str
    question: str
    balanced: bool
    answer: str | None = None  # absent from test, challenge and submission files
    structural: str | None = None  # types.structural: "query" is open, the rest binary
    entailed: tuple[str, ...] = ()
    program: tuple[Operation, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.structural == "query"


def load_questions(path: str | Path) -> dict[str, GqaQuestion]:
    """Read and check a GQA questions file; keeps the file's order."""
    return parse_questions(read_json(path, "GQA questions file"), str(path))


def parse_questions(document: Any, source: str) -> dict[str, GqaQuestion]:
    if not isinstance(document, dict):
        raise UserError(f"{source}: expected a JSON object keyed by question id, got {described(document)}")
    return {qid: _question(qid, record, source) for qid, record in document.items()}


def _question(qid: str, record: Any, source: str) -> GqaQuestion:
    where = f"{source}: question {qid!r}"
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, got {described(record)}")
    image_id, question = _text(record, "imageId", where), _text(record, "question", where)
    balanced = record.get("isBalanced")
    if not isinstance(balanced, bool):
        raise UserError(f"{where}: 'isBalanced' must be true or false, got {described(balanced)}")
    answer = _text(record, "answer", where) if "answer" in record else None
    types = record.get("types", {})
    if not isinstance(types, dict):
        raise UserError(f"{where}: 'types' must be an object, got {described(types)}")
    structural = _text(types, "structural", f"{where} types") if "structural" in types else None
    entailed = record.get("entailed", [])
    if not isinstance(entailed, list) or not all(isinstance(e, str) for e in entailed):
        raise UserError(f"{where}: 'entailed' must be a list of question-id strings, got {described(entailed)}")
    return GqaQuestion(qid, image_id, question, balanced, answer, structural, tuple(entailed),
                       _program(record.get("semantic", []), where))


def _program(steps: Any, where: str) -> tuple[Operation, ...]:
    if not isinstance(steps, list):
        raise UserError(f"{where}: 'semantic' must be a list of operations, got {described(steps)}")
    program = []
    for index, step in enumerate(steps):
        at = f"{where} semantic[{index}]"
        if not isinstance(step, dict):
            raise UserError(f"{at}: expected an object, got {described(step)}")
        dependencies = step.get("dependencies", [])
        if not isinstance(dependencies, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < index for d in dependencies):
            raise UserError(f"{at}: 'dependencies' must list earlier step numbers, got {described(dependencies)}")
        program.append(Operation(_text(step, "operation", at), tuple(dependencies), _text(step, "argument", at)))
    return tuple(program)


def _text(record: Mapping[str, Any], key: str, where: str) -> str:
    if key not in record:
        raise UserError(f"{where}: missing key '{key}'")
    value = record[key]
    if not isinstance(value, str):
        raise UserError(f"{where}: '{key}' must be a string, got {described(value)}")
    return value
