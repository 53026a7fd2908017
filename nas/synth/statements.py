"""Statements about one image in NLVR2's words, half of them false by a minimal change.

NLVR2's sentences name an image ("The left image contains ...") or both; every one of them rests
on a single-image judgement: does this image hold an object of this description, and how many.
Real NLVR2 models learn that judgement in pre-training (LXMERT's matching and QA); these
statements give the built-in pre-training corpus the same words and the same judgement. A false
statement changes one attribute of a present object's description (or a count by one), so it is a
hard negative. Across a split the sentences are also balanced as NLVR2 balances its own (each
sentence true for half of its images): a ``StatementBalance`` keeps each sentence's yes-minus-no
tally, and each scene emits the candidates whose sentence most needs their truth value. Without it
the words alone would give the answer away: "The image contains a red cube." is true of most scenes
that prompt it and "... exactly six ..." false of most, and a text-only model scored 68% (against
50%) on unbalanced statements, learnt nothing from the image, and its image stream died
(``benchmarks/image_reliance.py``).
"""

from __future__ import annotations

import numpy as np

from nas.synth.vqa_questions import _phrase
from nas.synth.world import ATTRIBUTE_VALUES, ATTRIBUTES, Scene

__all__ = ["NUMBERS", "StatementBalance", "count_matching", "single_image_statements"]

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
_TRIES = 50  # draws per statement before giving up on it
_POOL = 4  # candidates drawn per emitted statement when balancing


def count_matching(scene: Scene, attrs: dict[str, str]) -> int:
    """How many of the scene's objects have every attribute value in ``attrs``."""
    return sum(all(obj.attr(a) == v for a, v in attrs.items()) for obj in scene.objects)


def _describe(scene: Scene, rng: np.random.Generator, most_attributes: int) -> dict[str, str]:
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    chosen = rng.choice(len(ATTRIBUTES), size=int(rng.integers(1, most_attributes + 1)), replace=False)
    return {ATTRIBUTES[int(k)]: obj.attr(ATTRIBUTES[int(k)]) for k in sorted(chosen)}


def _draw(scene: Scene, rng: np.random.Generator, most_attributes: int, true: bool) -> str | None:
    attrs = _describe(scene, rng, most_attributes)
    if rng.random() < 0.5:  # existence
        if not true:
            changed = list(attrs)[int(rng.integers(len(attrs)))]
            others = [v for v in ATTRIBUTE_VALUES[changed] if v != attrs[changed]]
            attrs = {**attrs, changed: others[int(rng.integers(len(others)))]}
            if count_matching(scene, attrs):
                return None
        return f"The image contains a {_phrase(attrs)}."
    number = count_matching(scene, attrs)
    if not true:
        number += 1 if number == 1 or rng.random() < 0.5 else -1  # never zero: "exactly zero" is existence
    if not 1 <= number < len(NUMBERS):
        return None
    noun = _phrase(attrs, plural=number != 1)
    return f"The image contains exactly {NUMBERS[number]} {noun}."


class StatementBalance:
    """Each sentence's running count of true minus false emissions over the scenes of a split."""

    def __init__(self) -> None:
        self.tally: dict[str, int] = {}

    def need(self, sentence: str, truth: bool) -> int:
        """Lower is more needed: a sentence emitted false more often than true needs a true one."""
        return self.tally.get(sentence, 0) * (1 if truth else -1)

    def add(self, sentence: str, truth: bool) -> None:
        self.tally[sentence] = self.tally.get(sentence, 0) + (1 if truth else -1)


def single_image_statements(scene: Scene, count: int, rng: np.random.Generator, most_attributes: int = 2,
                            balance: StatementBalance | None = None) -> list[tuple[str, bool]]:
    """``count`` distinct (statement, truth) pairs about ``scene``, each describing objects by
    1..``most_attributes`` attributes; fewer when the scene allows no more distinct ones.

    Without ``balance`` they are true and false alternately (true first). With it, ``_POOL`` times as
    many candidates are drawn (alternately true and false) and those whose sentence most needs its
    truth value are emitted (ties: alternately true and false), and the tally is updated.
    """
    draws = count if balance is None else _POOL * count
    candidates: list[tuple[str, bool]] = []
    for index in range(draws):
        true = index % 2 == 0
        for _ in range(_TRIES):
            sentence = _draw(scene, rng, most_attributes, true)
            if sentence is not None and all(sentence != s for s, _ in candidates):
                candidates.append((sentence, true))
                break
    if balance is None:
        return candidates
    chosen: list[tuple[str, bool]] = []
    while candidates and len(chosen) < count:
        wanted = len(chosen) % 2 == 0
        pick = min(range(len(candidates)),
                   key=lambda k: (balance.need(*candidates[k]), candidates[k][1] != wanted, k))
        sentence, truth = candidates.pop(pick)
        balance.add(sentence, truth)
        chosen.append((sentence, truth))
    return chosen
