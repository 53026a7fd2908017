"""Procedural CLEVR-like scenes: objects with attributes and 2-D pixel boxes.

A scene is what a bottom-up detector would report for one image: a few objects drawn from
CLEVR's attribute vocabulary (FORMATS.md section 6) with non-overlapping boxes, plus
distractor regions, i.e. part boxes inside an object and loose background boxes, which real
detectors also emit. Region order is shuffled because a detector sorts boxes by confidence,
not by anything a model could exploit.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "COLORS",
    "COLOR_NEIGHBOURS",
    "Box",
    "Distractor",
    "MATERIALS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "sample_scene",
]

COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
SIZES = ("small", "large")
ATTRIBUTES = ("color", "shape", "material", "size")
ATTRIBUTE_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"color": COLORS, "shape": SHAPES, "material": MATERIALS, "size": SIZES}
)
# Colours that look alike: their feature prototypes are correlated and annotators confuse them.
COLOR_NEIGHBOURS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "gray": ("cyan", "brown"), "red": ("brown", "purple"), "blue": ("cyan", "purple"),
    "green": ("yellow", "cyan"), "brown": ("red", "yellow"), "purple": ("blue", "red"),
    "cyan": ("green", "blue"), "yellow": ("brown", "green"),
})

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels

# Box side as a fraction of min(image_w, image_h); large objects are about twice as big.
_SIDE = MappingProxyType({"small": (0.105, 0.155), "large": (0.20, 0.30)})
# Width and height multipliers: cylinders stand upright, spheres are round.
_ASPECT = MappingProxyType({"cube": (1.0, 1.05), "sphere": (1.0, 1.0), "cylinder": (0.8, 1.15)})
_MAX_OVERLAP = 0.2  # intersection / smaller box area allowed between two objects
_PLACEMENT_TRIES = 200
_SCENE_TRIES = 50


@dataclass(frozen=True)
class SceneObject:
    """One object; ``region`` is the row of its box and feature in the image's npz."""

    color: str
    shape: str
    material: str
    size: str
    region: int

    def attr(self, name: str) -> str:
        return getattr(self, name)


@dataclass(frozen=True)
class Distractor:
    """A detector box that is not an object: ``part`` of object ``parent`` or ``background``."""

    kind: str
    region: int
    parent: int | None


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    objects: tuple[SceneObject, ...]
    distractors: tuple[Distractor, ...]
    boxes: tuple[Box, ...]  # every region in npz row order

    def box(self, obj: int) -> Box:
        return self.boxes[self.objects[obj].region]

    def centre(self, obj: int) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box(obj)
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def _overlap(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _quantise(box: tuple[float, ...]) -> Box:
    # Store-exact values: the npz holds float32, and answers must agree with what is stored.
    x1, y1, x2, y2 = (float(v) for v in np.asarray(np.round(box, 2), dtype=np.float32))
    return x1, y1, x2, y2


def _place(rng: np.random.Generator, w: float, h: float, width: int, height: int,
           placed: list[Box]) -> Box | None:
    for _ in range(_PLACEMENT_TRIES):
        x1 = rng.uniform(0.0, width - w)
        y1 = rng.uniform(0.0, height - h)
        box = _quantise((x1, y1, x1 + w, y1 + h))
        if all(_overlap(box, other) <= _MAX_OVERLAP for other in placed):
            return box
    return None


def _sample_objects(rng: np.random.Generator, n: int, width: int, height: int,
                    ) -> list[tuple[dict[str, str], Box]]:
    scale = min(width, height)
    objects: list[tuple[dict[str, str], Box]] = []
    for _ in range(n):
        attrs = {a: ATTRIBUTE_VALUES[a][int(rng.integers(len(ATTRIBUTE_VALUES[a])))]
                 for a in ATTRIBUTES}
        side = rng.uniform(*_SIDE[attrs["size"]]) * scale
        aw, ah = _ASPECT[attrs["shape"]]
        box = _place(rng, side * aw, side * ah, width, height, [b for _, b in objects])
        if box is not None:  # a crowded image simply holds fewer objects
            objects.append((attrs, box))
    return objects


def _distractor_box(rng: np.random.Generator, parent: Box | None, width: int, height: int) -> Box:
    if parent is not None:  # a part box lies inside its object, e.g. a cube's top face
        x1, y1, x2, y2 = parent
        pw, ph = (x2 - x1) * rng.uniform(0.35, 0.7), (y2 - y1) * rng.uniform(0.35, 0.7)
        px, py = rng.uniform(x1, x2 - pw), rng.uniform(y1, y2 - ph)
        return _quantise((px, py, px + pw, py + ph))
    bw, bh = width * rng.uniform(0.25, 0.8), height * rng.uniform(0.25, 0.8)
    bx, by = rng.uniform(0.0, width - bw), rng.uniform(0.0, height - bh)
    return _quantise((bx, by, bx + bw, by + bh))


def sample_scene(rng: np.random.Generator, *, min_objects: int, max_objects: int,
                 max_distractors: int, width: int, height: int) -> Scene:
    """Draw one scene: ``min_objects..max_objects`` objects and ``0..max_distractors`` extras."""
    for _ in range(_SCENE_TRIES):
        n = int(rng.integers(min_objects, max_objects + 1))
        objects = _sample_objects(rng, n, width, height)
        if len(objects) >= min_objects:
            break
    else:
        raise RuntimeError(f"cannot place {min_objects} objects in a {width}x{height} image")

    extras: list[tuple[str, int | None, Box]] = []
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        if rng.random() < 0.5:
            parent = int(rng.integers(len(objects)))
            extras.append(("part", parent, _distractor_box(rng, objects[parent][1], width, height)))
        else:
            extras.append(("background", None, _distractor_box(rng, None, width, height)))

    boxes = [b for _, b in objects] + [b for _, _, b in extras]
    order = rng.permutation(len(boxes))  # order[row] = index into objects+extras
    row_of = {int(src): row for row, src in enumerate(order)}
    return Scene(
        width=width,
        height=height,
        objects=tuple(SceneObject(region=row_of[i], **attrs) for i, (attrs, _) in enumerate(objects)),
        distractors=tuple(Distractor(kind, row_of[len(objects) + j], parent)
                          for j, (kind, parent, _) in enumerate(extras)),
        boxes=tuple(boxes[int(src)] for src in order),
    )
