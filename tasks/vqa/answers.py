"""The answer vocabulary (MCAN convention) and soft VQA targets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nas.errors import UserError, described
from nas.io import atomic_write_json, read_json
from tasks.vqa.answer_norm import prep_answer

__all__ = ["build_answer_vocab", "load_or_build_answer_vocab", "read_answer_dict", "write_answer_dict",
           "soft_scores", "score_for_count"]


def build_answer_vocab(annotations: list[dict], min_count: int) -> list[str]:
    """Normalised ``multiple_choice_answer``s seen at least ``min_count`` times, first-seen order."""
    counts = Counter(prep_answer(a["multiple_choice_answer"]) for a in annotations)
    return [answer for answer, count in counts.items() if count >= min_count]


def load_or_build_answer_vocab(path: Path, annotations: list[dict], min_count: int) -> list[str]:
    """Reuse the run's ``answer_dict.json`` (MCAN's ``[ans_to_ix, ix_to_ans]`` format) or build it.

    Saving it with the run keeps answer indices fixed across machines and resumes.
    """
    if path.is_file():
        return read_answer_dict(path)
    answers = build_answer_vocab(annotations, min_count)
    if not answers:
        raise UserError(f"no answer occurs at least {min_count} times; lower task.answer_min_count")
    write_answer_dict(path, answers)
    return answers


def read_answer_dict(path: Path) -> list[str]:
    """The answers of an ``answer_dict.json``, by index, checked."""
    data = read_json(path, "answer dictionary")
    try:
        ans_to_ix, ix_to_ans = data
        answers = [ix_to_ans[str(i)] for i in range(len(ix_to_ans))]
    except (ValueError, TypeError, KeyError):
        raise UserError(f"{path}: expected MCAN's [ans_to_ix, ix_to_ans] answer dictionary, with ix_to_ans "
                        "keyed \"0\", \"1\", ... without gaps") from None
    if not answers:
        raise UserError(f"{path}: the answer dictionary is empty")
    bad = next((a for a in answers if not isinstance(a, str)), None)
    if bad is not None:
        raise UserError(f"{path}: answers must be strings, got {described(bad)}")
    if len(set(answers)) < len(answers):
        repeated = next(a for a in answers if answers.count(a) > 1)
        raise UserError(f"{path}: answer {repeated!r} has more than one index")
    return answers


def write_answer_dict(path: Path, answers: list[str]) -> None:
    """Save ``answers`` in MCAN's ``[ans_to_ix, ix_to_ans]`` format."""
    atomic_write_json(path, [{a: i for i, a in enumerate(answers)}, {str(i): a for i, a in enumerate(answers)}],
                      indent=None)


def score_for_count(count: int) -> float:
    """0, .3, .6, .9 for 0-3 annotators, 1 for 4 or more (the VQA metric's leave-one-out mean)."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def soft_scores(answers: list[dict], answer_index: dict[str, int]) -> list[tuple[int, float]]:
    """Sparse soft target of one question: ``(answer id, score)`` for answers in the vocabulary."""
    counts = Counter(prep_answer(a["answer"]) for a in answers)
    return [(answer_index[a], score_for_count(n)) for a, n in counts.items() if a in answer_index]
