"""Question families, canonical answers and noisy annotators for synthetic VQA.

Every question refers to objects by the smallest attribute set that singles them out, so the
answer is a function of the scene. Templates are few and regular on purpose: a small model must
learn them in minutes. Yes/no answers are balanced per family and counts are drawn uniformly over
the counts a scene can produce, so no single answer dominates. Ten annotators then answer each
question; some deviate with a look-alike answer or a surface variant that the official VQA
normalisation maps back to the canonical answer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations, product
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from nas.synth.world import (ATTRIBUTES, ATTRIBUTE_VALUES, COLOR_NEIGHBOURS, COLORS, MATERIALS,
                             SHAPES, SIZES, Scene)

__all__ = ["FAMILIES", "FAMILY_ANSWER_TYPES", "OFFICIAL_QUESTION_TYPES", "RELATIONS", "Question",
           "annotate", "generate_questions", "majority_answer", "normalize_answer",
           "question_type", "relation_holds"]

FAMILIES = ("exist", "count", "query_attribute", "compare_attribute", "relation", "nearest")
FAMILY_ANSWER_TYPES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "exist": ("yes/no",), "count": ("number",), "query_attribute": ("other",),
    "compare_attribute": ("yes/no",), "relation": ("yes/no", "other"), "nearest": ("other",)})
# QuestionTypes/mscoco_question_types.txt of GT-Vision-Lab/VQA, in file order.
OFFICIAL_QUESTION_TYPES = tuple((
    "how many|is the|what|what color is the|what is the|is this|is this a|what is|are the|"
    "what kind of|is there a|what type of|is it|what are the|where is the|is there|does the|"
    "what color are the|are these|are there|which|is|what is the man|is the man|are|how|"
    "does this|what is on the|what does the|how many people are|what is in the|what is this|do|"
    "what are|are they|what time|what sport is|are there any|is he|what color is|why|"
    "where are the|what color|who is|what animal is|is the woman|is this an|do you|"
    "how many people are in|what room is|has|is this person|what is the woman|can you|"
    "why is the|is the person|what is the color of the|what is the person|could|was|"
    "is that a|what number is|what is the name|what brand").split("|"))
_TYPE_WORDS = tuple(tuple(t.split()) for t in OFFICIAL_QUESTION_TYPES)
RELATIONS = ("left of", "right of", "above", "below")
RELATION_MARGIN = 0.05  # centres closer than this fraction of the image side are "neither"
NEAREST_RATIO = 1.25  # the runner-up must be this much farther away than the nearest object
_QUERY_WEIGHTS = MappingProxyType({"color": 0.4, "shape": 0.2, "material": 0.2, "size": 0.2})
_RETRIES = 8
_RELATION_YES_NO = 0.35  # the query form fails more often, so this yields about half yes/no


@dataclass(frozen=True)
class Question:
    family: str
    text: str
    answer: str  # canonical, already in normalised form
    answer_type: str  # "yes/no" | "number" | "other"

    @property
    def question_type(self) -> str:
        return question_type(self.text)


def question_type(text: str) -> str:
    """The longest official question-type prefix of ``text``, word-aligned."""
    words = tuple(re.sub(r"[?.!,]", "", text.lower()).split())
    fits = [p for p in _TYPE_WORDS if words[: len(p)] == p]
    return " ".join(max(fits, key=len)) if fits else "none of the above"


# ---- scene logic -------------------------------------------------------------------------

def _matching(scene: Scene, attrs: dict[str, str]) -> list[int]:
    return [i for i, o in enumerate(scene.objects) if all(o.attr(a) == v for a, v in attrs.items())]


def _describe(scene: Scene, target: int, rng: np.random.Generator,
              exclude: tuple[str, ...] = ()) -> dict[str, str] | None:
    """Smallest attribute set (ties broken at random) that matches only ``target``."""
    allowed = [a for a in ATTRIBUTES if a not in exclude]
    obj = scene.objects[target]
    for k in range(len(allowed) + 1):
        unique = [{a: obj.attr(a) for a in combo} for combo in combinations(allowed, k)]
        unique = [d for d in unique if _matching(scene, d) == [target]]
        if unique:
            return unique[int(rng.integers(len(unique)))]
    return None


def _phrase(attrs: dict[str, str], plural: bool = False) -> str:
    words = [attrs[a] for a in ("size", "color", "material") if a in attrs]
    return " ".join(words + [attrs.get("shape", "thing") + ("s" if plural else "")])


def relation_holds(scene: Scene, a: int, rel: str, b: int) -> bool | None:
    """Whether object ``a`` is ``rel`` object ``b`` by box centres; None when too close to call."""
    (ax, ay), (bx, by) = scene.centre(a), scene.centre(b)
    horizontal = rel in ("left of", "right of")
    delta = {"left of": bx - ax, "right of": ax - bx,  # image y grows downwards
             "above": by - ay, "below": ay - by}[rel]
    margin = RELATION_MARGIN * (scene.width if horizontal else scene.height)
    return None if abs(delta) < margin else delta > 0


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _order(rng: np.random.Generator, n: int) -> list[int]:
    return [int(i) for i in rng.permutation(n)]


# ---- families ----------------------------------------------------------------------------

def _exist(scene: Scene, rng: np.random.Generator) -> Question | None:
    k = int(rng.choice([1, 2, 3], p=[0.4, 0.45, 0.15]))
    if rng.random() < 0.5:
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        attrs = {str(a): obj.attr(str(a)) for a in rng.choice(ATTRIBUTES, k, replace=False)}
        answer = "yes"
    else:
        for _ in range(50):
            combo = rng.choice(ATTRIBUTES, k, replace=False)
            attrs = {str(a): str(rng.choice(ATTRIBUTE_VALUES[str(a)])) for a in combo}
            if not _matching(scene, attrs):
                break
        else:
            return None
        answer = "no"
    return Question("exist", f"Is there a {_phrase(attrs)}?", answer, "yes/no")


def _count(scene: Scene, rng: np.random.Generator) -> Question | None:
    by_count: dict[int, list[dict[str, str]]] = {}
    for k in (0, 1, 2):
        for combo in combinations(ATTRIBUTES, k):
            present = Counter(tuple(o.attr(a) for a in combo) for o in scene.objects)
            for values in product(*(ATTRIBUTE_VALUES[a] for a in combo)):
                by_count.setdefault(present[values], []).append(dict(zip(combo, values)))
    n = _pick(rng, sorted(by_count))
    attrs = _pick(rng, by_count[n])
    return Question("count", f"How many {_phrase(attrs, plural=True)} are there?", str(n), "number")


def _query_attribute(scene: Scene, rng: np.random.Generator) -> Question | None:
    attr = str(rng.choice(list(_QUERY_WEIGHTS), p=list(_QUERY_WEIGHTS.values())))
    for target in _order(rng, len(scene.objects)):
        desc = _describe(scene, target, rng, exclude=(attr,))
        if desc is not None:
            return Question("query_attribute", f"What {attr} is the {_phrase(desc)}?",
                            scene.objects[target].attr(attr), "other")
    return None


def _compare_attribute(scene: Scene, rng: np.random.Generator) -> Question | None:
    attr = str(rng.choice(ATTRIBUTES))
    same = bool(rng.random() < 0.5)
    n = len(scene.objects)
    for flat in _order(rng, n * n):
        i, j = divmod(flat, n)
        if i == j or (scene.objects[i].attr(attr) == scene.objects[j].attr(attr)) != same:
            continue
        da, db = _describe(scene, i, rng, (attr,)), _describe(scene, j, rng, (attr,))
        if da is None or db is None:
            continue
        if rng.random() < 0.5:
            text = f"Are the {_phrase(da)} and the {_phrase(db)} the same {attr}?"
        else:
            text = f"Is the {_phrase(da)} the same {attr} as the {_phrase(db)}?"
        return Question("compare_attribute", text, "yes" if same else "no", "yes/no")
    return None


def _relation(scene: Scene, rng: np.random.Generator) -> Question | None:
    rel = str(rng.choice(RELATIONS))
    n = len(scene.objects)
    if rng.random() < _RELATION_YES_NO:  # yes/no form, answer drawn first to keep it balanced
        want = bool(rng.random() < 0.5)
        for flat in _order(rng, n * n):
            a, b = divmod(flat, n)
            if a != b and relation_holds(scene, a, rel, b) is want:
                da, db = _describe(scene, a, rng), _describe(scene, b, rng)
                if da is not None and db is not None:
                    return Question("relation", f"Is the {_phrase(da)} {rel} the {_phrase(db)}?",
                                    "yes" if want else "no", "yes/no")
        return None
    attr = str(rng.choice(["color", "shape", "material"]))
    for b in _order(rng, n):  # query form: only when exactly one object stands in the relation
        verdicts = [relation_holds(scene, a, rel, b) for a in range(n) if a != b]
        hits = [a for a in range(n) if a != b and relation_holds(scene, a, rel, b)]
        db = _describe(scene, b, rng)
        if len(hits) == 1 and None not in verdicts and db is not None:
            return Question("relation", f"What {attr} is the thing {rel} the {_phrase(db)}?",
                            scene.objects[hits[0]].attr(attr), "other")
    return None


def _nearest(scene: Scene, rng: np.random.Generator) -> Question | None:
    attr = str(rng.choice(["color", "shape", "material"]))
    for b in _order(rng, len(scene.objects)):
        bx, by = scene.centre(b)
        dist = sorted((np.hypot(x - bx, y - by), a) for a in range(len(scene.objects)) if a != b
                      for x, y in [scene.centre(a)])
        if len(dist) >= 2 and dist[1][0] < NEAREST_RATIO * dist[0][0]:
            continue
        db = _describe(scene, b, rng)
        if db is not None:
            return Question("nearest", f"What {attr} is the thing nearest to the {_phrase(db)}?",
                            scene.objects[dist[0][1]].attr(attr), "other")
    return None


_GENERATORS: Mapping[str, Callable[[Scene, np.random.Generator], Question | None]] = MappingProxyType({
    "exist": _exist, "count": _count, "query_attribute": _query_attribute,
    "compare_attribute": _compare_attribute, "relation": _relation, "nearest": _nearest})


def generate_questions(scene: Scene, count: int, rng: np.random.Generator) -> list[Question]:
    """``count`` distinct questions, cycling through the families in a random order per image."""
    slots: list[int] = []
    while len(slots) < count:
        slots.extend(_order(rng, len(FAMILIES)))
    questions: list[Question] = []
    seen: set[str] = set()
    for first in slots[:count]:
        for offset in range(len(FAMILIES)):  # fall back to the next family if this one cannot fit
            family = FAMILIES[(first + offset) % len(FAMILIES)]
            tries = (_GENERATORS[family](scene, rng) for _ in range(_RETRIES))
            made = next((q for q in tries if q is not None and q.text not in seen), None)
            if made is not None:
                questions.append(made)
                seen.add(made.text)
                break
    return questions


# ---- annotators --------------------------------------------------------------------------

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten")
_WORD_TO_DIGIT = MappingProxyType({"none": "0", **{w: str(i) for i, w in enumerate(_NUMBER_WORDS)}})
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_CONFIDENCES = ("yes", "maybe", "no")
# Cumulative P(yes), P(yes or maybe) of the stated confidence, for sure and unsure annotators.
_SURE, _UNSURE = (0.85, 0.97), (0.35, 0.85)
_VARIANT_SHARE = 0.6  # of deviating annotators, those who only spell the right answer differently
_MAX_WRONG = 3


def normalize_answer(answer: str) -> str:
    """The official evaluator's processPunctuation + processDigitArticle (vqaEval.py).

    The contractions table is left out: no synthetic answer contains an apostrophe.
    """
    s = answer.replace("\n", " ").replace("\t", " ").strip()
    out = s
    digit_comma = _COMMA_STRIP.search(s) is not None
    for p in _PUNCT:
        if p in out:
            drop = digit_comma or p + " " in s or " " + p in s
            out = out.replace(p, "" if drop else " ")
    out = _PERIOD_STRIP.sub("", out, count=32)  # vqaEval passes re.UNICODE (32) as the count
    words = [_WORD_TO_DIGIT.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def majority_answer(answers: list[str]) -> str:
    """Most frequent normalised answer; ties go to the answer seen first."""
    counts = Counter(normalize_answer(a) for a in answers)
    return max(counts, key=counts.__getitem__)


def _variants(answer: str) -> list[str]:
    """Spellings that normalise back to ``answer``."""
    if answer.isdigit():
        word = _NUMBER_WORDS[int(answer)] if int(answer) < len(_NUMBER_WORDS) else answer
        return [word, word.capitalize(), f"{answer}."] + (["none"] if answer == "0" else [])
    out = [answer.capitalize(), f"{answer}.", answer.upper()]
    if answer in ("yes", "no"):
        out.append(f"{answer}!")
    if answer in SHAPES:
        out += [f"a {answer}", f"the {answer}"]
    return out


def _wrong(answer: str, rng: np.random.Generator) -> str:
    """A plausible mistake: flipped yes/no, count off by one, look-alike colour, other value."""
    if answer in ("yes", "no"):
        return "no" if answer == "yes" else "yes"
    if answer.isdigit():
        n = int(answer)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
    if answer in COLORS:
        return _pick(rng, list(COLOR_NEIGHBOURS[answer]))
    pool = next(v for v in (SHAPES, MATERIALS, SIZES) if answer in v)
    return _pick(rng, [v for v in pool if v != answer])


def annotate(answer: str, noise: float, rng: np.random.Generator) -> list[dict]:
    """Ten VQA-style answers in which ``answer`` (normalised) is given at least 7 times.

    Each question gets its own deviation rate in [0, 2*noise] so agreement ranges from
    unanimous to contested, as in the real annotations. A deviating annotator usually writes a
    surface variant; otherwise a plausible wrong answer. At most 3 wrong answers are allowed, so
    a wrong prediction never earns full VQA credit (4 matches) and the labels stay learnable.
    """
    rate = min(1.0, noise * rng.uniform(0.0, 2.0))
    for _ in range(20):
        given: list[tuple[str, bool]] = []
        for _ in range(10):
            if rng.random() >= rate:
                given.append((answer, True))
            elif rng.random() < _VARIANT_SHARE:
                given.append((_pick(rng, _variants(answer)), True))
            else:
                given.append((_wrong(answer, rng), False))
        if sum(not sure for _, sure in given) <= _MAX_WRONG:
            break
    else:  # pathological noise settings: fall back to a clean, unanimous question
        given = [(answer, True)] * 10
    draws = rng.random(len(given))
    return [{"answer": a,
             "answer_confidence": _CONFIDENCES[sum(u >= c for c in (_SURE if sure else _UNSURE))],
             "answer_id": k + 1}
            for k, ((a, sure), u) in enumerate(zip(given, draws))]
