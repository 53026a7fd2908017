"""CLEVR scene records, object masks and grid features for the built-in CLEVR-Ref+ data.

A ``world.sample_scene`` layout becomes a CLEVR scene (FORMATS.md section 6): objects are sorted
from far to near (a higher box bottom is nearer the camera) and painted in that order, so a later
object occludes an earlier one and the per-object masks are disjoint. Shapes are drawn inside the
object's box: a filled ellipse for a sphere, the whole box for a cube and a rectangle with
elliptic caps for an (upright) cylinder. Camera-frame ``3d_coords`` and ``directions`` are chosen
so CLEVR's relationship rule (``dot(coords_j - coords_i, direction) > eps``) reads left/right off
the image x axis and front/behind off the box bottom.

Grid features imitate IEP's ResNet maps: the image is resized to a square ``grid x grid`` map and
each cell's vector mixes the attribute prototypes of the objects covering it, weighted by the
covered fraction, with the background direction for the rest, plus noise (``feature_noise`` as in
the other writers). Position lives only in where a cell is, as in a CNN map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.masks import cell_coverage
from nas.rle import encode_rle
from nas.synth.features import Prototypes, _activate, _unit
from nas.synth.world import ATTRIBUTES, Scene

__all__ = ["DIRECTIONS", "RELATION_EPS", "RenderedScene", "grid_features", "render_scene"]

# Camera-frame unit vectors: x grows to the right, y towards the camera, z upwards.
DIRECTIONS = {"left": [-1.0, 0.0, 0.0], "right": [1.0, 0.0, 0.0], "front": [0.0, 1.0, 0.0],
              "behind": [0.0, -1.0, 0.0], "above": [0.0, 0.0, 1.0], "below": [0.0, 0.0, -1.0]}
RELATION_EPS = 0.2  # CLEVR's threshold for a relationship, in scene units
_SCENE_UNITS = 6.0  # the image width spans this many scene units (CLEVR's floor is about 6 wide)
_HEIGHT = {"small": 0.35, "large": 0.7}  # z of an object's centre
_CAP = 0.15  # a cylinder's elliptic caps take this share of its box height each


@dataclass(frozen=True)
class RenderedScene:
    """One image: the CLEVR scene record and what the masks and features are made from."""

    record: dict  # CLEVR scene fields plus obj_mask (1-based keys, RLE strings)
    labels: np.ndarray  # (H, W) int16: index of the visible object, -1 for background
    attributes: tuple[dict[str, str], ...]  # per object, CLEVR object order


def _shape_mask(shape: str, box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    ys = np.arange(height)[:, None] + 0.5  # pixel centres
    xs = np.arange(width)[None, :] + 0.5
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    cx, rx = (x1 + x2) / 2.0, (x2 - x1) / 2.0
    if shape == "sphere":
        cy, ry = (y1 + y2) / 2.0, (y2 - y1) / 2.0
        return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    if shape == "cylinder":
        cap = _CAP * (y2 - y1)
        body = inside & (ys >= y1 + cap) & (ys < y2 - cap)
        top = ((xs - cx) / rx) ** 2 + ((ys - (y1 + cap)) / cap) ** 2 <= 1.0
        bottom = ((xs - cx) / rx) ** 2 + ((ys - (y2 - cap)) / cap) ** 2 <= 1.0
        return body | top | bottom
    return inside  # a cube seen from the front


def _relationships(coords: np.ndarray) -> dict[str, list[list[int]]]:
    out = {}
    for rel in ("left", "right", "front", "behind"):
        along = (coords - coords[:, None, :]) @ np.asarray(DIRECTIONS[rel])  # [i, j]: j relative to i
        out[rel] = [[j for j in range(len(coords)) if j != i and along[i, j] > RELATION_EPS]
                    for i in range(len(coords))]
    return out


def render_scene(scene: Scene, split: str, image_index: int, rng: np.random.Generator) -> RenderedScene:
    """The CLEVR scene record of ``scene`` with its object masks (image ``image_index`` of ``split``)."""
    height, width = scene.height, scene.width
    order = sorted(range(len(scene.objects)), key=lambda i: (scene.box(i)[3], i))  # far to near
    labels = np.full((height, width), -1, np.int16)
    objects, attributes, coords = [], [], []
    for index, source in enumerate(order):
        obj, box = scene.objects[source], scene.box(source)
        labels[_shape_mask(obj.shape, box, height, width)] = index  # nearer objects paint over farther ones
        cx, bottom = (box[0] + box[2]) / 2.0, box[3]
        xyz = [(cx / width - 0.5) * _SCENE_UNITS, (bottom / height - 0.5) * _SCENE_UNITS * height / width,
               _HEIGHT[obj.size]]
        coords.append(xyz)
        attributes.append({a: obj.attr(a) for a in ATTRIBUTES})
        objects.append({**attributes[-1], "rotation": round(float(rng.uniform(0.0, 360.0)), 3),
                        "3d_coords": [round(v, 4) for v in xyz],
                        "pixel_coords": [int(round(cx)), int(round((box[1] + box[3]) / 2.0)),
                                         round(12.0 - 4.0 * bottom / height, 4)]})
    record = {
        "split": split, "image_index": image_index, "image_filename": f"CLEVR_{split}_{image_index:06d}.png",
        "directions": DIRECTIONS, "objects": objects, "relationships": _relationships(np.asarray(coords)),
        "obj_mask": {str(i + 1): encode_rle(labels == i) for i in range(len(objects))},
    }
    return RenderedScene(record, labels, tuple(attributes))


def grid_features(rendered: RenderedScene, protos: Prototypes, grid: int, noise: float,
                  rng: np.random.Generator) -> np.ndarray:
    """IEP-style (C, grid, grid) float32 features of one rendered image."""
    weights = rng.uniform(0.75, 1.25, size=(len(rendered.attributes), len(ATTRIBUTES)))  # pose and lighting
    mix = np.zeros((grid, grid, protos.dim))
    covered = np.zeros((grid, grid))
    for index, (attrs, salience) in enumerate(zip(rendered.attributes, weights)):
        share = cell_coverage(rendered.labels == index, grid).astype(np.float64)  # (grid, grid)
        direction = _unit(sum(w * protos.of(a, attrs[a]) for w, a in zip(salience, ATTRIBUTES)))
        mix += share[..., None] * direction
        covered += share
    clutter = protos.background + 0.4 * _unit(rng.standard_normal((grid, grid, protos.dim)))
    mix += (1.0 - covered)[..., None] * _unit(clutter)
    features = _activate(_unit(mix).reshape(grid * grid, protos.dim), noise, rng)  # (grid*grid, C)
    return np.ascontiguousarray(features.reshape(grid, grid, protos.dim).transpose(2, 0, 1))
