"""Corpus BLEU-1..4 exactly as pycocoevalcap's ``Bleu(4).compute_score`` computes it.

Papineni et al. 2002 (https://aclanthology.org/P02-1040), in the variant of the COCO caption
evaluation: n-gram counts clipped by each n-gram's largest count in any one reference; the
reference length of an image is the one closest to the hypothesis length (the shorter on a
tie); clipped matches, guesses and lengths summed over the corpus before the geometric mean;
``1e-15`` added to matches and ``1e-9`` to guesses and lengths, so no count divides by zero and a
zero match count still gives (almost) zero.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from tasks.caption.metrics.inputs import Key, ngram_counts, paired

__all__ = ["bleu"]

_TINY = 1e-15
_SMALL = 1e-9


def _geometric_means(correct: Sequence[float], guess: Sequence[float], test_len: float, ref_len: float
                     ) -> list[float]:
    """BLEU-1..n from match and guess counts (one image's or the corpus's), brevity penalty included."""
    scores, product = [], 1.0
    for k, (c, g) in enumerate(zip(correct, guess)):
        product *= (c + _TINY) / (g + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def bleu(refs: Mapping[Key, Sequence[str]], hyps: Mapping[Key, str | Sequence[str]], n: int = 4
         ) -> tuple[list[float], dict[Key, list[float]]]:
    """BLEU-1..n over the corpus, and each image's own BLEU-1..n (pycocoevalcap's second value).

    Args:
        refs: tokenised reference captions per image.
        hyps: one tokenised caption per image (bare or in a one-element list); same keys as ``refs``.
    """
    total_correct, total_guess = [0] * n, [0] * n
    total_test = total_ref = 0
    per_image: dict[Key, list[float]] = {}
    for key, references, hypothesis in paired(refs, hyps):
        max_counts: dict[tuple[str, ...], int] = {}
        for reference in references:
            for gram, count in ngram_counts(reference, n).items():
                if count > max_counts.get(gram, 0):
                    max_counts[gram] = count
        test_len = len(hypothesis.split())
        ref_len = min((abs(len(r.split()) - test_len), len(r.split())) for r in references)[1]
        correct = [0] * n
        for gram, count in ngram_counts(hypothesis, n).items():
            correct[len(gram) - 1] += min(count, max_counts.get(gram, 0))
        guess = [max(0, test_len - k) for k in range(n)]
        per_image[key] = _geometric_means(correct, guess, test_len, ref_len)
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        total_test += test_len
        total_ref += ref_len
    return _geometric_means(total_correct, total_guess, total_test, total_ref), per_image
