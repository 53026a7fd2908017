"""Statements about one image in NLVR2's words, half of them false by a minimal change.

NLVR2's sentences name an image ("The left image contains ...") or both; every one of them rests
on a single-image judgement: does this image hold an object of this description, and how many.
Real NLVR2 models learn that judgement in pre-training (LXMERT's matching and QA); these
statements give the built-in pre-training corpus the same words and the same judgement. A false
statement changes one attribute of a present object's description (or a count by one), so it is a
hard negative: the words alone, and the rest of the scene, do not give it away.
"""

from __future__ import annotations

import numpy as np

from nas.synth.vqa_questions import _phrase
from nas.synth.world import ATTRIBUTE_VALUES, ATTRIBUTES, Scene

__all__ = ["NUMBERS", "count_matching", "single_image_statements"]

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
_TRIES = 50  # draws per statement before giving up on it


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


def single_image_statements(scene: Scene, count: int, rng: np.random.Generator,
                            most_attributes: int = 2) -> list[tuple[str, bool]]:
    """``count`` distinct (statement, truth) pairs about ``scene``, true and false alternately
    (true first), each describing objects by 1..``most_attributes`` attributes; fewer when the
    scene allows no more distinct ones."""
    chosen: list[tuple[str, bool]] = []
    for index in range(count):
        true = index % 2 == 0
        for _ in range(_TRIES):
            sentence = _draw(scene, rng, most_attributes, true)
            if sentence is not None and all(sentence != s for s, _ in chosen):
                chosen.append((sentence, true))
                break
    return chosen
