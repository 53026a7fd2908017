"""MCAN's answer dictionary, ``answer_dict.json``: ``[ans_to_ix, ix_to_ans]``.

Every run that answers from a vocabulary (vqa, gqa, pretrain) saves one, so its answer indices
stay fixed across machines and resumes, and ``train.init`` matches classifier rows by answer.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import UserError, described
from nas.io import atomic_write_json, read_json

__all__ = ["read_answer_dict", "write_answer_dict"]


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
