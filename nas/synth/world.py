"""Procedural CLEVR-like scenes: objects with attributes and 2-D pixel boxes.

A scene is what a bottom-up detector would report for one image: a few objects drawn from
CLEVR's attribute vocabulary (FORMATS.md section 6) with non-overlapping boxes, plus
distractor regions, i.e. part boxes inside an object and loose background boxes, which real
detectors also emit. Region order is shuffled because a detector sorts boxes by confidence,
not by anything a model could exploit.

Grounding and retrieval need a fixed number of regions per image, as MmNas's fix-100/fix-36
features have, so ``propose_regions`` instead surrounds a scene's objects with detector-like
proposals: tight boxes (IoU >= 0.6 with the object), partial ones (IoU 0.3-0.45) and clutter.
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
    "Proposals",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "box_iou",
    "propose_regions",
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


# ---- detector proposals around a scene (fixed-N features for grounding and retrieval) ----

# IoU bands of a proposal with its object. Both stay clear of 0.5 under the continuous (SimREC)
# and the Fast R-CNN "+1" (MmNas) area conventions, so the positives never depend on which.
GOOD_IOU = (0.6, 0.95)
PARTIAL_IOU = (0.3, 0.45)
BACKGROUND_MAX_IOU = 0.3
GOOD_PER_OBJECT, PARTIAL_PER_OBJECT = 2, 2
PROPOSALS_PER_OBJECT = GOOD_PER_OBJECT + PARTIAL_PER_OBJECT


@dataclass(frozen=True)
class Proposals:
    """Detector boxes for one image, in output (shuffled) row order."""

    boxes: tuple[Box, ...]
    owners: tuple[int | None, ...]  # index into Scene.objects, None for a background box
    coverage: tuple[float, ...]  # IoU with the owner's box; 0.0 for background


def box_iou(a: Box, b: Box) -> float:
    """IoU with continuous areas (no +1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _clipped(box: np.ndarray, width: int, height: int) -> Box | None:
    x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if x2 - x1 < 2.0 or y2 - y1 < 2.0:
        return None
    return _quantise((x1, y1, x2, y2))


def _proposal(rng: np.random.Generator, gt: Box, band: tuple[float, float], width: int,
              height: int) -> Box:
    """A box whose IoU with ``gt`` lies in ``band``: edge jitter, or a part box inside ``gt``."""
    lo, hi = band
    x1, y1, x2, y2 = gt
    w, h = x2 - x1, y2 - y1
    spread = 0.08 if lo >= 0.5 else 0.3  # tight boxes barely move; partial ones slide off
    for _ in range(_PLACEMENT_TRIES):
        if lo < 0.5 and rng.random() < 0.5:  # the visible part of an object, e.g. one face
            r = rng.uniform(lo, hi)
            fw = rng.uniform(r, 1.0)
            pw, ph = w * fw, h * r / fw
            px, py = rng.uniform(x1, x2 - pw), rng.uniform(y1, y2 - ph)
            box = _clipped(np.array([px, py, px + pw, py + ph]), width, height)
        else:
            box = _clipped(np.asarray(gt) + rng.normal(0.0, spread, 4) * [w, h, w, h], width, height)
        if box is not None and lo <= box_iou(box, gt) <= hi:
            return box
    # Unreachable in practice; a centred shrink has IoU = s^2 exactly, so the band still holds.
    s = np.sqrt((lo + hi) / 2.0)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return _quantise((cx - s * w / 2, cy - s * h / 2, cx + s * w / 2, cy + s * h / 2))


def _background(rng: np.random.Generator, objects: list[Box], width: int, height: int) -> Box:
    for _ in range(_PLACEMENT_TRIES):
        if rng.random() < 0.5:  # object-sized clutter in an empty spot
            side = rng.uniform(0.1, 0.3) * min(width, height)
            bw, bh = side * rng.uniform(0.7, 1.4), side * rng.uniform(0.7, 1.4)
        else:  # large "table" / "floor" regions
            bw, bh = width * rng.uniform(0.25, 0.8), height * rng.uniform(0.25, 0.8)
        bx, by = rng.uniform(0.0, width - bw), rng.uniform(0.0, height - bh)
        box = _quantise((bx, by, bx + bw, by + bh))
        if all(box_iou(box, o) < BACKGROUND_MAX_IOU for o in objects):
            return box
    return _quantise((0.0, 0.0, width, height))  # objects are small: whole-image IoU stays low


def propose_regions(scene: Scene, count: int, rng: np.random.Generator) -> Proposals:
    """Exactly ``count`` detector boxes: per object ``GOOD_PER_OBJECT`` tight and
    ``PARTIAL_PER_OBJECT`` partial proposals, then background boxes, in shuffled order.

    The objects' own boxes are never among them, as with a real detector's output.
    """
    gts = [scene.box(i) for i in range(len(scene.objects))]
    if count < PROPOSALS_PER_OBJECT * len(gts):
        raise ValueError(f"{count} proposals cannot cover {len(gts)} objects "
                         f"({PROPOSALS_PER_OBJECT} each)")
    rows: list[tuple[Box, int | None]] = []
    for i, gt in enumerate(gts):
        rows += [(_proposal(rng, gt, GOOD_IOU, scene.width, scene.height), i)
                 for _ in range(GOOD_PER_OBJECT)]
        rows += [(_proposal(rng, gt, PARTIAL_IOU, scene.width, scene.height), i)
                 for _ in range(PARTIAL_PER_OBJECT)]
    rows += [(_background(rng, gts, scene.width, scene.height), None) for _ in range(count - len(rows))]
    order = [int(k) for k in rng.permutation(len(rows))]
    boxes = tuple(rows[k][0] for k in order)
    owners = tuple(rows[k][1] for k in order)
    coverage = tuple(0.0 if o is None else box_iou(b, gts[o]) for b, o in zip(boxes, owners))
    return Proposals(boxes, owners, coverage)
