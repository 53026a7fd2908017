"""GQA's answer vocabulary: answers kept verbatim, because the official metric is an exact match.

(VQA's normalisation would turn "two" into "2" and make a right answer wrong here.)
The vocabulary is saved with the run in MCAN's ``[ans_to_ix, ix_to_ans]`` format, so answer
indices stay fixed across resumes and machines.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from nas.errors import UserError
from nas.io import atomic_write_json, read_json

__all__ = ["load_or_build_answers"]


def load_or_build_answers(path: Path, answers: Iterable[str], min_count: int) -> list[str]:
    """The run's saved vocabulary, or the answers seen at least ``min_count`` times (first-seen order)."""
    if path.is_file():
        data = read_json(path, "answer dictionary")
        try:
            _, ix_to_ans = data
            vocabulary = [ix_to_ans[str(i)] for i in range(len(ix_to_ans))]
        except (ValueError, TypeError, KeyError):
            raise UserError(f"{path}: expected MCAN's [ans_to_ix, ix_to_ans] answer dictionary") from None
        if not vocabulary or not all(isinstance(a, str) for a in vocabulary) or len(set(vocabulary)) < len(vocabulary):
            raise UserError(f"{path}: answers must be distinct strings, at least one")
        return vocabulary
    counts = Counter(answers)
    vocabulary = [answer for answer, count in counts.items() if count >= min_count]
    if not vocabulary:
        raise UserError(f"no answer occurs at least {min_count} times; lower task.answer_min_count")
    atomic_write_json(path, [{a: i for i, a in enumerate(vocabulary)}, {str(i): a for i, a in enumerate(vocabulary)}],
                      indent=None)
    return vocabulary
