"""GQA's official accuracy (``gqa_eval.py``): exact match on balanced questions, open and binary.

Only questions with ``isBalanced`` count. ``open`` is ``types.structural == "query"``; every
other question is ``binary``. Like the official script, a balanced question without a
prediction is an error, not a zero. Consistency follows it too: over the balanced questions
answered correctly, the mean accuracy on the other questions they entail (those present in
the file; the official script needs predictions for all of them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from nas.errors import UserError

from tasks.gqa.questions import GqaQuestion

__all__ = ["GqaScores", "gqa_scores"]


@dataclass(frozen=True)
class GqaScores:
    accuracy: float  # percent, over balanced questions
    open: float
    binary: float
    consistency: float | None  # percent; None when no correct answer entails another question
    questions: int  # balanced questions scored

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def gqa_scores(questions: Mapping[str, GqaQuestion], predictions: Mapping[str, str], source: str) -> GqaScores:
    """Score ``predictions`` (question id -> answer string) against ``questions``."""
    balanced = [q for q in questions.values() if q.balanced]
    if not balanced:
        raise UserError(f"{source}: no balanced questions to score")
    unanswerable = [q.question_id for q in balanced if q.answer is None]
    if unanswerable:
        raise UserError(f"{source}: {_how_many(len(unanswerable), 'balanced questions')} no 'answer' "
                        f"(a test file?), e.g. {unanswerable[0]!r}")
    _require(predictions, [q.question_id for q in balanced], source, "balanced questions")
    correct = {q.question_id: predictions[q.question_id] == q.answer for q in balanced}
    open_scores = [correct[q.question_id] for q in balanced if q.is_open]
    binary_scores = [correct[q.question_id] for q in balanced if not q.is_open]
    consistency = []
    for q in balanced:
        entailed = [e for e in q.entailed if e != q.question_id and e in questions]
        if correct[q.question_id] and entailed:
            _require(predictions, entailed, source, f"questions entailed by {q.question_id!r}")
            consistency.append(_percent([predictions[e] == questions[e].answer for e in entailed]))
    return GqaScores(accuracy=_percent(list(correct.values())), open=_percent(open_scores),
                     binary=_percent(binary_scores),
                     consistency=sum(consistency) / len(consistency) if consistency else None,
                     questions=len(balanced))


def _require(predictions: Mapping[str, str], ids: list[str], source: str, what: str) -> None:
    missing = [i for i in ids if i not in predictions]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise UserError(f"{source}: {_how_many(len(missing), what)} no prediction ({shown})")


def _how_many(count: int, plural: str) -> str:
    """``"1 of the questions has"`` / ``"3 questions have"``: the subject and verb of an error."""
    return f"1 of the {plural} has" if count == 1 else f"{count} {plural} have"


def _percent(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags) if flags else 0.0
