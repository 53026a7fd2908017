"""Referring expressions with CLEVR-Ref+ programs for the built-in scenes.

Four families, ``refexp_family_index`` being the position in ``FAMILIES``:

* ``unique``: attributes that pick out one object ("The large red cube.");
* ``plural``: attributes shared by several objects ("The metal spheres.");
* ``relate_unique``: one object among those in a relation to a uniquely described one
  ("The sphere left of the red cube.");
* ``relate_plural``: every such object that also has some attributes ("The things behind the
  small cylinder.").

Programs are CLEVR-Ref+'s: post-order node lists of ``{"type", "inputs", "value_inputs"}`` built
from ``scene``, ``filter_<attribute>``, ``unique`` and ``relate``; the last node carries
``_output``, the sorted 0-based indices of the referred objects. Relations are read off the scene
record's ``relationships``, so programs and scenes always agree.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from nas.synth.vqa_questions import _phrase

__all__ = ["FAMILIES", "RELATION_WORDS", "Refexp", "draw_refexps", "run_program"]

FAMILIES = ("unique", "plural", "relate_unique", "relate_plural")
RELATION_WORDS = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
_ORDER = ("size", "color", "material", "shape")  # filter order, as the phrase reads
_TRIES = 20


Refexp = dict  # {"refexp", "program", "family"}; the writer adds the image fields


def _matches(attributes: tuple[dict[str, str], ...], candidates: list[int], attrs: dict[str, str]) -> list[int]:
    return [i for i in candidates if all(attributes[i][a] == v for a, v in attrs.items())]


def _identify(attributes: tuple[dict[str, str], ...], target: int, candidates: list[int],
              rng: np.random.Generator, allow_empty: bool) -> dict[str, str] | None:
    """Attributes of ``target`` that no other candidate shares: a shortest set, sometimes one longer."""
    found: list[tuple[str, ...]] = []
    for size in range(0 if allow_empty else 1, len(_ORDER) + 1):
        found += [names for names in combinations(_ORDER, size)
                  if _matches(attributes, candidates, {a: attributes[target][a] for a in names}) == [target]]
        if found and (size > len(found[0]) or rng.random() < 0.5):  # stop at the shortest, or one longer
            break
    if not found:
        return None
    names = found[int(rng.integers(len(found)))]
    return {a: attributes[target][a] for a in names}


def _shared(attributes: tuple[dict[str, str], ...], candidates: list[int], rng: np.random.Generator,
            allow_empty: bool) -> dict[str, str] | None:
    """Attributes of a random candidate that at least two candidates share."""
    for _ in range(_TRIES):
        source = candidates[int(rng.integers(len(candidates)))]
        size = int(rng.integers(0 if allow_empty else 1, 3))
        names = rng.choice(len(_ORDER), size=size, replace=False)
        attrs = {_ORDER[int(k)]: attributes[source][_ORDER[int(k)]] for k in sorted(names)}
        if len(_matches(attributes, candidates, attrs)) >= 2:
            return attrs
    return None


def _filters(program: list[dict], attrs: dict[str, str]) -> None:
    for name in _ORDER:
        if name in attrs:
            program.append({"type": f"filter_{name}", "inputs": [len(program) - 1], "value_inputs": [attrs[name]]})


def _node(program: list[dict], kind: str, values: list[str] | None = None) -> None:
    program.append({"type": kind, "inputs": [len(program) - 1], "value_inputs": values or []})


def _draw(family: str, record: dict, attributes: tuple[dict[str, str], ...], rng: np.random.Generator
          ) -> Refexp | None:
    everyone = list(range(len(attributes)))
    program: list[dict] = [{"type": "scene", "inputs": [], "value_inputs": []}]
    if family in ("unique", "plural"):
        if family == "unique":
            target = int(rng.integers(len(attributes)))
            attrs = _identify(attributes, target, everyone, rng, allow_empty=False)
        else:
            attrs = _shared(attributes, everyone, rng, allow_empty=False)
        if attrs is None:
            return None
        _filters(program, attrs)
        if family == "unique":
            _node(program, "unique")
        text = f"The {_phrase(attrs, plural=family == 'plural')}."
    else:
        anchor = int(rng.integers(len(attributes)))
        anchor_attrs = _identify(attributes, anchor, everyone, rng, allow_empty=False)
        relation = list(RELATION_WORDS)[int(rng.integers(len(RELATION_WORDS)))]
        related = record["relationships"][relation][anchor]
        if anchor_attrs is None or not related:
            return None
        if family == "relate_unique":
            attrs = _identify(attributes, related[int(rng.integers(len(related)))], related, rng, allow_empty=True)
        else:
            attrs = _shared(attributes, related, rng, allow_empty=True) if len(related) >= 2 else None
        if attrs is None:
            return None
        _filters(program, anchor_attrs)
        _node(program, "unique")
        _node(program, "relate", [relation])
        _filters(program, attrs)
        if family == "relate_unique":
            _node(program, "unique")
        text = (f"The {_phrase(attrs, plural=family == 'relate_plural')} {RELATION_WORDS[relation]} "
                f"the {_phrase(anchor_attrs)}.")
    output = run_program(program, record)
    program[-1]["_output"] = output
    return Refexp(refexp=text, program=program, family=family)


def run_program(program: list[dict], record: dict) -> list[int]:
    """The sorted object indices a program refers to in a CLEVR scene record (``unique`` keeps its set)."""
    values: list[list[int]] = []
    for node in program:
        kind = node["type"]
        inputs = values[node["inputs"][0]] if node["inputs"] else []
        if kind == "scene":
            values.append(list(range(len(record["objects"]))))
        elif kind.startswith("filter_"):
            name = kind[len("filter_"):]
            values.append([i for i in inputs if record["objects"][i][name] == node["value_inputs"][0]])
        elif kind == "unique":
            if len(inputs) != 1:
                raise ValueError(f"unique over {len(inputs)} objects")
            values.append(inputs)
        elif kind == "relate":
            values.append(sorted(record["relationships"][node["value_inputs"][0]][inputs[0]]))
        else:
            raise ValueError(f"unknown program node type {kind!r}")
    return sorted(values[-1])


def draw_refexps(record: dict, attributes: tuple[dict[str, str], ...], count: int,
                 rng: np.random.Generator) -> list[Refexp]:
    """Up to ``count`` distinct expressions about one scene, the families taken in turn from a random one."""
    chosen: list[Refexp] = []
    start = int(rng.integers(len(FAMILIES)))
    for attempt in range(count * _TRIES):
        family = FAMILIES[(start + attempt) % len(FAMILIES)]  # the next family after each try
        refexp = _draw(family, record, attributes, rng)
        if refexp is not None and refexp["program"][-1]["_output"] and \
                all(refexp["refexp"] != other["refexp"] for other in chosen):
            chosen.append(refexp)
            if len(chosen) == count:
                break
    return chosen
