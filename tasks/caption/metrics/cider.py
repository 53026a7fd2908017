"""CIDEr-D (Vedantam et al. 2015, https://arxiv.org/abs/1411.5726) as pycocoevalcap's ``Cider``.

Each caption becomes, for n = 1..4, a TF-IDF vector of its n-grams: term count times
``log(number of images) - log(max(1, document frequency))``, where an n-gram's document
frequency is the number of images with it in at least one reference. Hypothesis and reference
are compared per n by a cosine in which each hypothesis weight is clipped to the reference's
(``min(h, r) * r``), times a Gaussian length penalty ``exp(-delta^2 / (2 sigma^2))``; as in
pycocoevalcap, delta counts BIGRAMS (a caption's "length" there is its bigram count). The
image's score is the mean over n, averaged over its references, times 10.

``CiderD`` fixes the document-frequency corpus once: self-critical training scores thousands
of sampled captions against the same training references, and the reference vectors, their
norms and the IDF table are computed only in the constructor.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Generic, Iterable, Mapping, Sequence

from tasks.caption.metrics.inputs import Key, ngram_counts, one_hypothesis, paired

__all__ = ["CiderD", "cider_d"]


class _Vector:
    """A caption's TF-IDF weights (all n-gram orders in one dict), per-order norms and bigram count."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, weights: dict[tuple[str, ...], float], norms: list[float], length: int) -> None:
        self.weights = weights
        self.norms = norms
        self.length = length


class CiderD(Generic[Key]):
    """CIDEr-D against a fixed corpus of references.

    Args:
        refs: tokenised reference captions per image; the document frequencies, and the
            ``log(len(refs))`` IDF ceiling, come from exactly these images.
        n: the longest n-gram.
        sigma: the width of the Gaussian length penalty.
    """

    def __init__(self, refs: Mapping[Key, Sequence[str]], n: int = 4, sigma: float = 6.0) -> None:
        if not refs:
            raise ValueError("CiderD needs at least one image of references")
        self.n = n
        self.sigma = sigma
        counted = {key: [ngram_counts(r, n) for r in references] for key, references in refs.items()}
        for key, references in counted.items():
            if not references:
                raise ValueError(f"no references for {key!r}")
        document_frequency: Counter[tuple[str, ...]] = Counter()
        for references in counted.values():
            document_frequency.update(set().union(*references))
        self._log_images = math.log(len(refs))
        self._idf = {gram: self._log_images - math.log(df) for gram, df in document_frequency.items()}
        self._refs = {key: [self._vector(c) for c in references] for key, references in counted.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._refs

    def __len__(self) -> int:
        return len(self._refs)

    def _vector(self, counts: Counter[tuple[str, ...]]) -> _Vector:
        weights, squares = {}, [0.0] * self.n
        for gram, count in counts.items():
            # An n-gram no reference has gets the largest IDF, log(images), as pycocoevalcap's max(1, df).
            weight = count * self._idf.get(gram, self._log_images)
            weights[gram] = weight
            squares[len(gram) - 1] += weight * weight
        length = sum(count for gram, count in counts.items() if len(gram) == 2)
        return _Vector(weights, [math.sqrt(s) for s in squares], length)

    def _similarity(self, hyp: _Vector, ref: _Vector) -> float:
        """Sum over n-gram orders of the clipped, length-penalised cosine."""
        dots = [0.0] * self.n
        ref_weights = ref.weights
        for gram, weight in hyp.weights.items():
            other = ref_weights.get(gram)
            if other is not None:
                dots[len(gram) - 1] += min(weight, other) * other
        total = 0.0
        for k in range(self.n):
            if hyp.norms[k] != 0 and ref.norms[k] != 0:
                total += dots[k] / (hyp.norms[k] * ref.norms[k])
            else:
                total += dots[k]
        delta = hyp.length - ref.length
        return total * math.exp(-(delta * delta) / (2 * self.sigma ** 2))

    def score_one(self, key: Key, hypothesis: str) -> float:
        """CIDEr-D of one tokenised caption for image ``key`` (which must be in the corpus)."""
        references = self._refs.get(key)
        if references is None:
            raise ValueError(f"image {key!r} is not in the CIDEr-D reference corpus ({len(self._refs)} images)")
        hyp = self._vector(ngram_counts(hypothesis, self.n))
        total = sum(self._similarity(hyp, ref) for ref in references)
        return 10.0 * total / self.n / len(references)

    def score_many(self, pairs: Iterable[tuple[Key, str]]) -> list[float]:
        """Scores of ``(key, caption)`` pairs; a key may repeat (several samples of one image)."""
        return [self.score_one(key, hypothesis) for key, hypothesis in pairs]

    def score(self, hyps: Mapping[Key, str | Sequence[str]]) -> tuple[float, dict[Key, float]]:
        """Mean CIDEr-D over the images of ``hyps`` (a subset of the corpus) and each image's score."""
        if not hyps:
            raise ValueError("no captions to score")
        per_image = {key: self.score_one(key, one_hypothesis(key, hyp)) for key, hyp in hyps.items()}
        return sum(per_image.values()) / len(per_image), per_image


def cider_d(refs: Mapping[Key, Sequence[str]], hyps: Mapping[Key, str | Sequence[str]]
            ) -> tuple[float, dict[Key, float]]:
    """pycocoevalcap's ``Cider().compute_score``: document frequencies from the evaluated refs
    (``refs`` and ``hyps`` must have the same keys)."""
    paired(refs, hyps)
    return CiderD(refs).score(hyps)
