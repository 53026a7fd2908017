"""ROUGE-L exactly as pycocoevalcap's ``Rouge().compute_score`` computes it.

Lin 2004 (https://aclanthology.org/W04-1013): the longest common subsequence (LCS) of the
hypothesis and each reference; the best precision and the best recall over the references
(possibly from different references) combine into an F-measure with beta = 1.2; the corpus
score is the mean over images.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from tasks.caption.metrics.inputs import Key, paired

__all__ = ["BETA", "lcs_length", "rouge_l", "rouge_l_image"]

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (one DP row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_image(hypothesis: str, references: Sequence[str], beta: float = BETA) -> float:
    """One image's ROUGE-L F."""
    # split(" ") as pycocoevalcap does: an empty caption is one empty token, so no division by zero.
    hyp_tokens = hypothesis.split(" ")
    precision = recall = 0.0
    for reference in references:
        ref_tokens = reference.split(" ")
        lcs = lcs_length(ref_tokens, hyp_tokens)
        precision = max(precision, lcs / len(hyp_tokens))
        recall = max(recall, lcs / len(ref_tokens))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


def rouge_l(refs: Mapping[Key, Sequence[str]], hyps: Mapping[Key, str | Sequence[str]]
            ) -> tuple[float, dict[Key, float]]:
    """Mean ROUGE-L over images, and each image's score (same keys in ``refs`` and ``hyps``)."""
    per_image = {key: rouge_l_image(hypothesis, references) for key, references, hypothesis in paired(refs, hyps)}
    return sum(per_image.values()) / len(per_image), per_image
