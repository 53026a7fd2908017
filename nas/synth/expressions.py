"""Referring expressions (grounding) and captions (retrieval) for synthetic scenes.

Referring expressions follow RefCOCO's style: short, lower-case, and about one object, using
its attributes ("the red metal cube", "red block"), a relation to an anchor object ("the cube
left of the green sphere"), an extreme position in a group ("the leftmost cylinder") or
proximity ("the object closest to the purple cube"). Every expression is checked against the
scene so it picks out exactly its target; spatial words use ``relation_holds``'s margin and
``NEAREST_RATIO``, so no expression hinges on a few pixels.

Captions follow Flickr30K's style: a sentence about the whole image naming several objects,
counts and a relation. Every caption is true of its scene; five differ per image, and they
combine attributes of several objects so two images rarely share one.
"""

from __future__ import annotations

from itertools import combinations
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from nas.synth.vqa_questions import NEAREST_RATIO, RELATION_MARGIN, RELATIONS, relation_holds
from nas.synth.world import ATTRIBUTES, Scene

__all__ = ["CAPTION_KINDS", "EXPRESSION_KINDS", "EXTREMES", "NUMBER_WORDS", "RELATION_WORDS",
           "Referrer", "WORDS", "generate_captions", "generate_expressions"]

EXPRESSION_KINDS = ("attribute", "relation", "extreme", "nearest")
CAPTION_KINDS = ("relation", "census", "shape_count", "list", "nearest")
# Annotators' words for each attribute value; colours have no synonyms.
WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "cube": ("cube", "block"), "sphere": ("sphere", "ball"), "cylinder": ("cylinder",),
    "metal": ("metal", "shiny"), "rubber": ("rubber", "matte"),
    "small": ("small", "tiny"), "large": ("large", "big")})
_NOUNS = ("object", "thing")  # when the shape is left out
RELATION_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
    "above": ("above",), "below": ("below", "under")})
_NEAR_WORDS = ("closest to", "nearest to")
# Extreme word -> (centre axis, sign): the object minimising sign * centre[axis] is meant.
EXTREMES: Mapping[str, tuple[int, int]] = MappingProxyType({
    "leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)})
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_EXTRA_P = (0.0, 0.3, 0.7)  # P(1, 2, 3 attributes besides the shape) in a caption
_TRIES = 4  # draws per kind; the pool then holds far more than max_sentences

Attrs = dict[str, str]


def _pick(rng: np.random.Generator, items: list | tuple):
    return items[int(rng.integers(len(items)))]


def _shuffled(rng: np.random.Generator, items: list | tuple) -> list:
    return [items[int(k)] for k in rng.permutation(len(items))]


class Referrer:
    """Writes referring expressions for the objects of one scene.

    It holds the look-ups that the expression search repeats many times, so build one per scene.
    """

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.centres = [scene.centre(i) for i in range(len(scene.objects))]
        self._matches: dict[tuple[tuple[str, str], ...], list[int]] = {}
        subsets = [_subsets(scene, o) for o in range(len(scene.objects))]
        self.uniques = [[d for d in sets if self.match(d) == [o]]  # per object, smallest first
                        for o, sets in enumerate(subsets)]
        # Short descriptions that other objects may share: "cube", "red object", "red cube".
        self.heads = [[d for d in sets if len(d) <= 1 or (len(d) == 2 and "shape" in d)]
                      for sets in subsets]

    def match(self, attrs: Attrs) -> list[int]:
        key = tuple(sorted(attrs.items()))
        if key not in self._matches:
            self._matches[key] = [i for i, o in enumerate(self.scene.objects)
                                  if all(o.attr(a) == v for a, v in key)]
        return self._matches[key]

    def expressions(self, target: int, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """Up to ``count`` distinct ``(kind, sentence)`` pairs that each single out ``target``.

        One attribute and one spatial expression come first when the scene allows them, so a
        ref mixes both, as RefCOCO's annotators do; the rest are drawn from all kinds.
        """
        pool: dict[str, list[str]] = {k: [] for k in EXPRESSION_KINDS}
        seen: set[str] = set()
        for kind in EXPRESSION_KINDS:
            for _ in range(_TRIES):
                text = _EXPRESSIONS[kind](self, target, rng)
                key = text.removeprefix("the ") if text else None
                if key is not None and key not in seen:  # "red cube" and "the red cube" are one
                    seen.add(key)
                    pool[kind].append(text)
        spatial = _shuffled(rng, [k for k in EXPRESSION_KINDS[1:] if pool[k]])
        order = (["attribute"] if pool["attribute"] else []) + spatial[:1]
        picked = [(k, pool[k].pop(0)) for k in order]
        rest = _shuffled(rng, [(k, s) for k in EXPRESSION_KINDS for s in pool[k]])
        return (picked + rest)[:count]


def _subsets(scene: Scene, target: int) -> list[Attrs]:
    """Every attribute subset of ``target``, smallest first."""
    obj = scene.objects[target]
    return [{a: obj.attr(a) for a in combo}
            for k in range(len(ATTRIBUTES) + 1) for combo in combinations(ATTRIBUTES, k)]


def _unique(found: list[Attrs], rng: np.random.Generator, minimal: bool = True) -> Attrs | None:
    """A random set from ``found``: one of the smallest, or any when not ``minimal``."""
    if not found:
        return None
    if minimal:
        found = [d for d in found if len(d) == len(found[0])]
    return _pick(rng, found)


def _phrase(attrs: Attrs, rng: np.random.Generator, plural: bool = False) -> str:
    words = [_pick(rng, WORDS.get(attrs[a], (attrs[a],))) for a in ("size", "color", "material")
             if a in attrs]
    noun = _pick(rng, WORDS[attrs["shape"]]) if "shape" in attrs else _pick(rng, _NOUNS)
    return " ".join(words + [noun + ("s" if plural else "")])


def _the(text: str, rng: np.random.Generator) -> str:
    return text if rng.random() < 0.25 else f"the {text}"  # RefCOCO often drops the article


def _a(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


def _nearest_to(centres: list[tuple[float, float]], b: int, group: list[int]) -> int | None:
    """The member of ``group`` clearly nearest to ``b`` (runner-up NEAREST_RATIO farther)."""
    bx, by = centres[b]
    dist = sorted((float(np.hypot(centres[o][0] - bx, centres[o][1] - by)), o) for o in group if o != b)
    if not dist or (len(dist) >= 2 and dist[1][0] < NEAREST_RATIO * dist[0][0]):
        return None
    return dist[0][1]


# ---- referring expressions -----------------------------------------------------------------

def _attribute_expr(ix: Referrer, t: int, rng: np.random.Generator) -> str | None:
    desc = _unique(ix.uniques[t], rng, minimal=rng.random() < 0.7)
    return None if desc is None else _the(_phrase(desc, rng), rng)


def _heads(ix: Referrer, t: int, rng: np.random.Generator) -> list[Attrs]:
    """Short descriptions of ``t`` that other objects may share: "cube" or "object" first,
    then "red object" or "red cube", so the spatial words do the work, as in RefCOCO."""
    return sorted(_shuffled(rng, ix.heads[t]), key=lambda d: len(d) + ("shape" not in d))


def _relation_expr(ix: Referrer, t: int, rng: np.random.Generator) -> str | None:
    scene, n = ix.scene, len(ix.scene.objects)
    for rel in _shuffled(rng, RELATIONS):
        for b in _shuffled(rng, [b for b in range(n) if b != t and relation_holds(scene, t, rel, b)]):
            anchor = _unique(ix.uniques[b], rng)
            for head in (_heads(ix, t, rng) if anchor is not None else []):
                rivals = [o for o in ix.match(head) if o not in (t, b)]
                if all(relation_holds(scene, o, rel, b) is False for o in rivals):
                    return (f"{_the(_phrase(head, rng), rng)} {_pick(rng, RELATION_WORDS[rel])} "
                            f"the {_phrase(anchor, rng)}")
    return None


def _extreme_expr(ix: Referrer, t: int, rng: np.random.Generator) -> str | None:
    for head in _heads(ix, t, rng):
        group = ix.match(head)
        if len(group) < 2:
            continue
        for word in _shuffled(rng, list(EXTREMES)):
            axis, sign = EXTREMES[word]
            ranked = sorted(group, key=lambda o: sign * ix.centres[o][axis])
            gap = abs(ix.centres[ranked[1]][axis] - ix.centres[ranked[0]][axis])
            side = ix.scene.width if axis == 0 else ix.scene.height
            if ranked[0] == t and gap >= RELATION_MARGIN * side:
                return _the(f"{word} {_phrase(head, rng)}", rng)
    return None


def _nearest_expr(ix: Referrer, t: int, rng: np.random.Generator) -> str | None:
    for b in _shuffled(rng, [b for b in range(len(ix.scene.objects)) if b != t]):
        anchor = _unique(ix.uniques[b], rng)
        for head in (_heads(ix, t, rng) if anchor is not None else []):
            if _nearest_to(ix.centres, b, ix.match(head)) == t:
                return (f"{_the(_phrase(head, rng), rng)} {_pick(rng, _NEAR_WORDS)} "
                        f"the {_phrase(anchor, rng)}")
    return None


_EXPRESSIONS: Mapping[str, Callable[["Referrer", int, np.random.Generator], str | None]] = MappingProxyType({
    "attribute": _attribute_expr, "relation": _relation_expr, "extreme": _extreme_expr,
    "nearest": _nearest_expr})


def generate_expressions(scene: Scene, target: int, count: int,
                         rng: np.random.Generator) -> list[tuple[str, str]]:
    """Up to ``count`` distinct ``(kind, sentence)`` pairs that each single out ``target``.

    For several targets of one scene, ``Referrer(scene).expressions`` shares the look-ups.
    """
    return Referrer(scene).expressions(target, count, rng)


# ---- captions ------------------------------------------------------------------------------

def _full(scene: Scene, o: int, rng: np.random.Generator) -> str:
    """``o`` with its shape and two or three more attributes (mostly all three), chosen at random.

    Sparser descriptions made captions true of other images too (2% of pairs), and retrieval
    training then mined those as hard "negatives"; with these it is 0.3%.
    """
    obj = scene.objects[o]
    extra = _shuffled(rng, ["size", "color", "material"])[: int(rng.choice(3, p=_EXTRA_P)) + 1]
    return _phrase({a: obj.attr(a) for a in ["shape", *extra]}, rng)


def _relation_cap(scene: Scene, rng: np.random.Generator) -> str | None:
    n = len(scene.objects)
    pairs = [(a, r, b) for a in range(n) for b in range(n) for r in RELATIONS
             if a != b and relation_holds(scene, a, r, b)]
    if not pairs:
        return None
    a, r, b = _pick(rng, pairs)
    return f"{_a(_full(scene, a, rng))} {_pick(rng, RELATION_WORDS[r])} {_a(_full(scene, b, rng))}"


def _census_cap(scene: Scene, rng: np.random.Generator) -> str | None:
    n = len(scene.objects)
    a, b = (int(i) for i in rng.choice(n, 2, replace=False))
    return f"{NUMBER_WORDS[n]} objects including {_a(_full(scene, a, rng))} and {_a(_full(scene, b, rng))}"


def _shape_count_cap(scene: Scene, rng: np.random.Generator) -> str | None:
    shapes = [o.shape for o in scene.objects]
    counted = _pick(rng, sorted(set(shapes)))
    others = [i for i, s in enumerate(shapes) if s != counted]
    if shapes.count(counted) < 2 or not others:
        return None
    word = _pick(rng, WORDS[counted])
    named = [_a(_full(scene, int(o), rng)) for o in rng.choice(others, min(2, len(others)), replace=False)]
    return f"{NUMBER_WORDS[shapes.count(counted)]} {word}s and " + " and ".join(named)


def _list_cap(scene: Scene, rng: np.random.Generator) -> str | None:
    k = min(len(scene.objects), int(rng.integers(2, 4)))
    items = [_a(_full(scene, int(o), rng)) for o in rng.choice(len(scene.objects), k, replace=False)]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _nearest_cap(scene: Scene, rng: np.random.Generator) -> str | None:
    centres = [scene.centre(i) for i in range(len(scene.objects))]
    for b in _shuffled(rng, list(range(len(scene.objects)))):
        a = _nearest_to(centres, b, list(range(len(scene.objects))))
        if a is not None:
            return f"{_a(_full(scene, a, rng))} next to {_a(_full(scene, b, rng))}"
    return None


_CAPTIONS: Mapping[str, Callable[[Scene, np.random.Generator], str | None]] = MappingProxyType({
    "relation": _relation_cap, "census": _census_cap, "shape_count": _shape_count_cap,
    "list": _list_cap, "nearest": _nearest_cap})


def generate_captions(scene: Scene, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``count`` distinct ``(kind, caption)`` pairs, each of a random kind (falling back to
    another kind when one does not fit the scene or repeats an earlier caption).

    Captions are written like Flickr30K's: capitalised, ending with a full stop.
    """
    made: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(50 * count):  # "list" alone has far more than five forms for any scene
        for kind in _shuffled(rng, CAPTION_KINDS):
            text = _CAPTIONS[kind](scene, rng)
            if text is not None and text not in seen:
                seen.add(text)
                made.append((kind, text[0].upper() + text[1:] + "."))
                break
        if len(made) == count:
            return made
    raise RuntimeError(f"cannot write {count} distinct captions for a {len(scene.objects)}-object scene")
