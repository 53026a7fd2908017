"""The shared input checks and n-gram counting of the BLEU, ROUGE-L and CIDEr-D scorers.

Inputs are already-tokenised strings, as pycocoevalcap's ``compute_score(gts, res)`` takes them:
``refs: {key: [caption, ...]}`` and ``hyps: {key: caption}`` (or ``{key: [caption]}``, the
one-element lists pycocoevalcap wants).
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Mapping, Sequence, TypeVar

__all__ = ["Key", "ngram_counts", "one_hypothesis", "paired"]

Key = TypeVar("Key", bound=Hashable)


def ngram_counts(caption: str, n: int = 4) -> Counter[tuple[str, ...]]:
    """All 1..n-grams of a whitespace-split caption, with their counts."""
    words = caption.split()
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        counts.update(tuple(words[i:i + k]) for i in range(len(words) - k + 1))
    return counts


def one_hypothesis(key: Hashable, hyp: str | Sequence[str]) -> str:
    """The caption of ``hyps[key]``, given bare or as pycocoevalcap's one-element list."""
    if isinstance(hyp, str):
        return hyp
    if len(hyp) != 1 or not isinstance(hyp[0], str):
        raise ValueError(f"hypothesis for {key!r} must be a string or a one-string list, got {hyp!r:.80}")
    return hyp[0]


def paired(refs: Mapping[Key, Sequence[str]], hyps: Mapping[Key, str | Sequence[str]]
           ) -> list[tuple[Key, list[str], str]]:
    """``(key, references, hypothesis)`` in ``hyps`` order; the key sets must be equal, as
    pycocoevalcap asserts, so that no image is silently left out or scored twice."""
    if refs.keys() != hyps.keys():
        missing = [k for k in hyps if k not in refs][:3]
        extra = [k for k in refs if k not in hyps][:3]
        raise ValueError(f"refs and hyps must have the same keys (hyps without refs: {missing}, "
                         f"refs without hyps: {extra})")
    if not hyps:
        raise ValueError("no captions to score")
    out = []
    for key, hyp in hyps.items():
        references = list(refs[key])
        if not references:
            raise ValueError(f"no references for {key!r}")
        out.append((key, references, one_hypothesis(key, hyp)))
    return out
