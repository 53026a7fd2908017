"""The answer vocabulary (MCAN convention) and soft VQA targets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nas.answer_dict import read_answer_dict, write_answer_dict
from nas.errors import UserError
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


def score_for_count(count: int) -> float:
    """0, .3, .6, .9 for 0-3 annotators, 1 for 4 or more (the VQA metric's leave-one-out mean)."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def soft_scores(answers: list[dict], answer_index: dict[str, int]) -> list[tuple[int, float]]:
    """Sparse soft target of one question: ``(answer id, score)`` for answers in the vocabulary."""
    counts = Counter(prep_answer(a["answer"]) for a in answers)
    return [(answer_index[a], score_for_count(n)) for a, n in counts.items() if a in answer_index]
