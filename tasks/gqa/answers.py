"""GQA's answer vocabulary: answers kept verbatim, because the official metric is an exact match.

(VQA's normalisation would turn "two" into "2" and make a right answer wrong here.)
The vocabulary is saved with the run in the same ``answer_dict.json`` format as VQA's, so
answer indices stay fixed across resumes and machines.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from nas.answer_dict import read_answer_dict, write_answer_dict
from nas.errors import UserError

__all__ = ["load_or_build_answers"]


def load_or_build_answers(path: Path, answers: Iterable[str], min_count: int) -> list[str]:
    """The run's saved vocabulary, or the answers seen at least ``min_count`` times (first-seen order)."""
    if path.is_file():
        return read_answer_dict(path)
    vocabulary = [answer for answer, count in Counter(answers).items() if count >= min_count]
    if not vocabulary:
        raise UserError(f"no answer occurs at least {min_count} times; lower task.answer_min_count")
    write_answer_dict(path, vocabulary)
    return vocabulary
