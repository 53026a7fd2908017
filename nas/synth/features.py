"""Detector-like region features for synthetic scenes.

Bottom-up features are pooled CNN activations: non-negative, high-dimensional, and linearly
informative about the object's attributes. We imitate that with one random prototype vector
per attribute value (drawn once from the seed and shared by every split, so train and val speak
the same "visual language"): an object's feature is a weighted mix of its colour, shape,
material and size prototypes plus Gaussian noise, passed through a ReLU. Part boxes mix only a
few of their parent's prototypes with a "part" direction; background boxes are mostly a
"background" direction. Features never see the box, so position lives only in ``bbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from nas.features_tsv import ObjRecord
from nas.synth.world import ATTRIBUTES, ATTRIBUTE_VALUES, COLOR_NEIGHBOURS, COLORS, SHAPES, Proposals, Scene

__all__ = ["ATTRIBUTE_CLASSES", "OBJECT_CLASSES", "Prototypes", "make_prototypes", "proposal_features",
           "region_features", "region_labels", "scene_record"]

# The detector's label columns of an obj36 TSV (objects_id, attrs_id) index these.
OBJECT_CLASSES = (*SHAPES, "part", "background")
ATTRIBUTE_CLASSES = (*COLORS, "none")

_PROTOTYPE_STREAM = 0x5EED  # keeps prototype draws independent of every per-image stream
_NEIGHBOUR_MIX = 0.3  # look-alike colours share this much of each other's direction
_OBJECT_WEIGHT = (0.75, 1.25)  # per-object attribute salience, like pose and lighting


@dataclass(frozen=True)
class Prototypes:
    """Unit-norm directions in feature space, read-only."""

    attribute: Mapping[str, np.ndarray]  # attribute -> (num_values, D), row order of ATTRIBUTE_VALUES
    part: np.ndarray  # (D,)
    background: np.ndarray  # (D,)

    @property
    def dim(self) -> int:
        return int(self.part.shape[0])

    def of(self, attribute: str, value: str) -> np.ndarray:
        return self.attribute[attribute][ATTRIBUTE_VALUES[attribute].index(value)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def make_prototypes(seed: int, dim: int) -> Prototypes:
    """Draw the per-value prototypes for ``seed``; identical for every split and run."""
    rng = np.random.default_rng([seed, _PROTOTYPE_STREAM])
    raw = {a: rng.standard_normal((len(ATTRIBUTE_VALUES[a]), dim)) for a in ATTRIBUTES}
    colour = raw["color"].copy()
    for i, name in enumerate(COLORS):
        for other in COLOR_NEIGHBOURS[name]:
            colour[i] += _NEIGHBOUR_MIX * raw["color"][COLORS.index(other)]
    raw["color"] = colour
    attribute = {a: _frozen(_unit(v)) for a, v in raw.items()}
    part, background = _unit(rng.standard_normal((2, dim)))
    return Prototypes(MappingProxyType(attribute), _frozen(part), _frozen(background))


def _mixes(scene: Scene, protos: Prototypes, rng: np.random.Generator) -> np.ndarray:
    """Noise-free unit directions, one row per region in npz order."""
    mix = np.zeros((len(scene.boxes), protos.dim))
    for obj in scene.objects:
        weights = rng.uniform(*_OBJECT_WEIGHT, size=len(ATTRIBUTES))
        mix[obj.region] = sum(w * protos.of(a, obj.attr(a)) for w, a in zip(weights, ATTRIBUTES))
    for d in scene.distractors:
        if d.kind == "part":
            parent = scene.objects[d.parent]
            mix[d.region] = (0.9 * protos.part
                             + rng.uniform(0.3, 0.7) * protos.of("color", parent.color)
                             + rng.uniform(0.2, 0.5) * protos.of("material", parent.material))
        else:  # clutter: a random direction on top of the background direction
            mix[d.region] = protos.background + 0.4 * _unit(rng.standard_normal(protos.dim))
    return _unit(mix)


def region_features(scene: Scene, protos: Prototypes, noise: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Features of every region of ``scene``, shape (N, D) float32, rows in npz order.

    ``noise`` is the noise norm relative to the unit signal norm. The sqrt(D) scale keeps each
    coordinate O(1), like pooled CNN activations, whatever ``D`` is.
    """
    return _activate(_mixes(scene, protos, rng), noise, rng)


def _activate(mix: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    dim = mix.shape[1]
    noisy = mix + noise * rng.standard_normal(mix.shape) / np.sqrt(dim)
    return np.maximum(noisy * np.sqrt(dim), 0.0).astype(np.float32)


def proposal_features(scene: Scene, proposals: Proposals, protos: Prototypes, noise: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Features of detector proposals, shape (N, D) float32, rows in ``proposals`` order.

    A proposal sees its object in proportion to its IoU with it: a tight box is mostly the
    object's attribute mix, a partial box mostly clutter. All proposals of one object share that
    object's salience draw, as crops of one image region would. Background boxes are clutter only.
    """
    salience = rng.uniform(*_OBJECT_WEIGHT, size=(len(scene.objects), len(ATTRIBUTES)))
    objects = [_unit(sum(w * protos.of(a, obj.attr(a)) for w, a in zip(weights, ATTRIBUTES)))
               for obj, weights in zip(scene.objects, salience)]
    clutter = protos.background + 0.4 * _unit(rng.standard_normal((len(proposals.boxes), protos.dim)))
    mix = np.stack([c * objects[o] + (1.0 - c) * _unit(junk) if o is not None else junk
                    for o, c, junk in zip(proposals.owners, proposals.coverage, clutter)])
    return _activate(_unit(mix), noise, rng)


def region_labels(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detector labels of every region in row order: (objects_id, objects_conf, attrs_id, attrs_conf)."""
    count = len(scene.boxes)
    objects, attrs = np.zeros(count, np.int64), np.zeros(count, np.int64)
    attr_conf = np.ones(count, np.float32)
    for obj in scene.objects:
        objects[obj.region], attrs[obj.region] = SHAPES.index(obj.shape), COLORS.index(obj.color)
    for d in scene.distractors:
        objects[d.region] = OBJECT_CLASSES.index(d.kind)
        if d.kind == "part":  # a part shows its object's colour
            attrs[d.region] = COLORS.index(scene.objects[d.parent].color)
        else:
            attrs[d.region], attr_conf[d.region] = ATTRIBUTE_CLASSES.index("none"), 0.0
    return objects, np.ones(count, np.float32), attrs, attr_conf


def scene_record(image_id: str, scene: Scene, features: np.ndarray) -> ObjRecord:
    """An obj36 TSV row for ``scene``: its boxes, its region features and the detector's labels."""
    objects, objects_conf, attrs, attrs_conf = region_labels(scene)
    return ObjRecord(img_id=image_id, img_h=scene.height, img_w=scene.width,
                     boxes=np.asarray(scene.boxes, dtype=np.float32), features=features, objects_id=objects,
                     objects_conf=objects_conf, attrs_id=attrs, attrs_conf=attrs_conf)
