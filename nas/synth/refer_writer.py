"""Write synthetic visual grounding data in the released RefCOCO formats.

The layout (FORMATS.md sections 2a and 4) is what refer.py, SimREC and MmNas read:
``refcoco/instances.json`` (COCO-style), ``refcoco/refs(unc).p`` (a protocol-2 pickle of plain
dicts), SimREC's ``anns/refcoco.json`` and one bottom-up ``.npz`` of exactly ``num_candidates``
detector proposals per image under ``coco_extract/train2014/``. As in RefCOCO, every image is a
COCO train2014 image and the splits (train/val/testA/testB) are by image. Unlike RefCOCO, testA
and testB are just two held-out image sets; there is no people/objects distinction.

Generation is deterministic in the seed (the pickle and JSON files are byte-identical across
runs) and atomic: everything is built in a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
from tqdm import tqdm

from nas.errors import UserError
from nas.synth.expressions import Referrer
from nas.synth.features import Prototypes, make_prototypes, proposal_features
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.vqa_writer import _MAX_COCO_ID
from nas.synth.world import PROPOSALS_PER_OBJECT, SHAPES, Box, Scene, box_iou, propose_regions, sample_scene

__all__ = ["CATEGORY_IDS", "GENERATOR", "SPLITS", "SynthReferConfig", "SynthReferSummary", "VERSION",
           "generate_refer", "read_meta", "simrec_cat_id"]

GENERATOR = "vlnas-synth-refer"
VERSION = 1
SPLITS = ("train", "val", "testA", "testB")
# COCO-style category ids (non-contiguous, like COCO's), one per CLEVR shape.
CATEGORY_IDS: Mapping[str, int] = MappingProxyType({"cube": 33, "sphere": 37, "cylinder": 44})
# COCO's 80 category ids in order; SimREC's cat_process maps an id to its index here.
_COCO_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
             *range(72, 83), *range(84, 91))
_ANNS_PER_IMAGE = 100  # ann_id = image_id * 100 + object number, unique and COCO-sized
_STREAM_IDS, _STREAM_SCENE, _STREAM_PROPOSALS, _STREAM_FEATURES, _STREAM_TEXT = 11, 12, 13, 14, 15


@dataclass(frozen=True)
class SynthReferConfig:
    seed: int = 0  # every random draw (prototypes, ids, scenes, boxes, sentences) derives from it
    train_images: int = 1500  # images per split; refs = images * ~refs_per_image
    val_images: int = 300
    testA_images: int = 300  # MmNas tests on testA; testB is a second held-out set
    testB_images: int = 300
    refs_per_image: int = 3  # at most; RefCOCO has ~2.5 refs per image
    min_sentences: int = 2  # sentences per ref, inclusive range; RefCOCO averages ~2.8
    max_sentences: int = 3
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    num_candidates: int = 36  # proposals per image, always exactly this many (MmNas VGD: 100)
    min_objects: int = 3  # objects per image, inclusive; 3+ gives spatial words something to do
    max_objects: int = 7
    feature_noise: float = 1.0  # noise norm / signal norm, as in SynthVqaConfig
    image_width: int = 480  # CLEVR's render size
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("testA_images", self.testA_images >= 0, ">= 0"),
            ("testB_images", self.testB_images >= 0, ">= 0"),
            ("refs_per_image", 1 <= self.refs_per_image <= 10, "in 1..10"),
            ("min_sentences", 1 <= self.min_sentences <= self.max_sentences, "in 1..max_sentences"),
            ("max_sentences", self.max_sentences <= 5, "<= 5"),
            ("num_candidates", self.num_candidates >= PROPOSALS_PER_OBJECT * self.max_objects,
             f">= {PROPOSALS_PER_OBJECT} * max_objects ({PROPOSALS_PER_OBJECT} proposals per object)"),
        ]
        check_fields(self, checks + scene_checks(self))
        if self.total_images > _MAX_COCO_ID:
            raise UserError(f"SynthReferConfig: {self.total_images} images exceed the "
                            f"{_MAX_COCO_ID} COCO ids")

    @property
    def total_images(self) -> int:
        return self.train_images + self.val_images + self.testA_images + self.testB_images


@dataclass(frozen=True)
class SynthReferSummary:
    root: Path
    num_images: dict[str, int]  # keyed by SPLITS
    num_refs: dict[str, int]
    num_sentences: dict[str, int]


def simrec_cat_id(category_id: int) -> int:
    """SimREC's ``cat_process``: a COCO category id to its contiguous 0..79 index."""
    return _COCO_IDS.index(category_id)


def feature_path(root: Path, image_id: int) -> Path:
    return root / "coco_extract" / "train2014" / f"COCO_train2014_{image_id:012d}.jpg.npz"


# ---- shared with scan_writer: completeness check and atomic publication -------------------

# ---- the dataset ---------------------------------------------------------------------------


def _image_ids(config: SynthReferConfig) -> dict[str, list[int]]:
    sizes = [config.train_images, config.val_images, config.testA_images, config.testB_images]
    ids = seeded_rng(config, _STREAM_IDS).choice(_MAX_COCO_ID, size=sum(sizes), replace=False) + 1
    starts = np.cumsum([0, *sizes])
    return {s: sorted(int(i) for i in ids[a:b]) for s, a, b in zip(SPLITS, starts[:-1], starts[1:])}


def _r2(values: Box | tuple[float, ...]) -> list[float]:
    # Boxes are float32 values of 2-decimal numbers; JSON gets the short decimal, which parses
    # back to the very same float32 as the npz holds.
    return [round(v, 2) for v in values]


def _xywh(box: Box) -> list[float]:
    x1, y1, x2, y2 = box
    return _r2((x1, y1, x2 - x1, y2 - y1))


def _targets(shapes: list[str], rng: np.random.Generator) -> list[int]:
    """Object order for refs: objects sharing their category first, as RefCOCO picks them."""
    order = [int(k) for k in rng.permutation(len(shapes))]
    return sorted(order, key=lambda o: shapes.count(shapes[o]) < 2)


def _raw(sent: str, rng: np.random.Generator) -> str:
    """What an annotator typed: ``sent`` is its lower-cased form, as in refer.py's data."""
    u = rng.random()
    return sent.upper() if u < 0.1 else sent.capitalize() if u < 0.4 else sent


def _write_image(tmp: Path, config: SynthReferConfig, split_no: int, index: int, image_id: int,
                 protos: Prototypes, out: dict) -> None:
    """Write one image's npz and append its annotations, refs and SimREC entries to ``out``."""
    scene = sample_scene(seeded_rng(config, _STREAM_SCENE, split_no, index), min_objects=config.min_objects,
                         max_objects=config.max_objects, max_distractors=0,
                         width=config.image_width, height=config.image_height)
    props = propose_regions(scene, config.num_candidates, seeded_rng(config, _STREAM_PROPOSALS, split_no, index))
    feats = proposal_features(scene, props, protos, config.feature_noise,
                              seeded_rng(config, _STREAM_FEATURES, split_no, index))
    bbox = np.asarray(props.boxes, dtype=np.float32)
    path = feature_path(tmp, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same keys, dtypes and (D, N) layout as bottom-up-attention's tools/extract_feat.py.
    np.savez_compressed(path, x=np.ascontiguousarray(feats.T), bbox=bbox, num_bbox=len(props.boxes),
                        image_h=scene.height, image_w=scene.width)
    out["images"].append({"id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg",
                          "height": scene.height, "width": scene.width})
    objects = []
    for k, obj in enumerate(scene.objects):
        x1, y1, x2, y2 = box = scene.box(k)
        ann_id = image_id * _ANNS_PER_IMAGE + k + 1
        x, y, w, h = _xywh(box)
        out["annotations"].append({"id": ann_id, "image_id": image_id,
                                   "category_id": CATEGORY_IDS[obj.shape], "bbox": [x, y, w, h],
                                   "area": round(w * h, 2), "iscrowd": 0,
                                   "segmentation": [_r2((x1, y1, x2, y1, x2, y2, x1, y2))]})
        objects.append({"ann_id": ann_id, "color": obj.color, "shape": obj.shape,
                        "material": obj.material, "size": obj.size, "box": _r2(box)})
    out["meta"]["images"][str(image_id)] = {"split": SPLITS[split_no], "objects": objects}
    _add_refs(out, config, SPLITS[split_no], image_id, scene, objects, bbox,
              seeded_rng(config, _STREAM_TEXT, split_no, index))


def _add_refs(out: dict, config: SynthReferConfig, split: str, image_id: int, scene: Scene,
              objects: list[dict], bbox: np.ndarray, rng: np.random.Generator) -> None:
    """Append up to ``refs_per_image`` refs of one image, with their SimREC entries and meta."""
    referrer = Referrer(scene)
    made = 0
    for t in _targets([o.shape for o in scene.objects], rng):
        want = int(rng.integers(config.min_sentences, config.max_sentences + 1))
        sentences = referrer.expressions(t, want, rng)
        if len(sentences) < config.min_sentences:
            continue  # e.g. a twin of another object with no clear spatial difference
        ref_id, ann_id = len(out["refs"]), objects[t]["ann_id"]
        category_id = CATEGORY_IDS[scene.objects[t].shape]
        sent_ids = list(range(out["next_sent_id"], out["next_sent_id"] + len(sentences)))
        out["next_sent_id"] += len(sentences)
        out["refs"].append({
            "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": category_id,
            "split": split, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            "sent_ids": sent_ids,
            "sentences": [{"sent_id": i, "tokens": s.split(), "raw": _raw(s, rng), "sent": s}
                          for i, (_, s) in zip(sent_ids, sentences)]})
        gt = scene.box(t)
        entry = {"iid": image_id, "bbox": _xywh(gt), "cat_id": simrec_cat_id(category_id)}
        if split == "train":  # SimREC: one entry per ref in train, one per sentence elsewhere
            out["simrec"][split].append({**entry, "refs": [s for _, s in sentences], "mask_id": ref_id})
        else:
            out["simrec"][split] += [{**entry, "refs": [s], "mask_id": ref_id} for _, s in sentences]
        out["meta"]["refs"][str(ref_id)] = {
            "image_id": image_id, "ann_id": ann_id, "split": split, "target_box": _r2(gt),
            "attributes": {a: objects[t][a] for a in ("color", "shape", "material", "size")},
            "positives": [r for r, b in enumerate(bbox.tolist()) if box_iou(tuple(b), gt) >= 0.5],
            "kinds": [k for k, _ in sentences]}
        made += 1
        if made == config.refs_per_image:
            break


def _build(tmp: Path, config: SynthReferConfig, progress: bool) -> SynthReferSummary:
    ids = _image_ids(config)
    protos = make_prototypes(config.seed, config.feature_dim)
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config),
                  "categories": dict(CATEGORY_IDS), "images": {}, "refs": {}}
    out: dict = {"images": [], "annotations": [], "refs": [], "next_sent_id": 0,
                 "simrec": {s: [] for s in SPLITS}, "meta": meta}
    with tqdm(total=config.total_images, desc="synthetic RefCOCO", unit="img",
              disable=not progress) as bar:
        for split_no, split in enumerate(SPLITS):
            for index, image_id in enumerate(ids[split]):
                _write_image(tmp, config, split_no, index, image_id, protos, out)
                bar.update(1)
    write_json(tmp / "refcoco" / "instances.json", {
        "images": out["images"], "annotations": out["annotations"],
        "categories": [{"id": CATEGORY_IDS[s], "name": s, "supercategory": "shape"} for s in SHAPES]})
    with open(tmp / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump(out["refs"], f, protocol=2)  # refer.py's files are Python-2 cPickles
    write_json(tmp / "anns" / "refcoco.json", out["simrec"])
    summary = SynthReferSummary(
        root=tmp, num_images={s: len(ids[s]) for s in SPLITS},
        num_refs={s: sum(r["split"] == s for r in out["refs"]) for s in SPLITS},
        num_sentences={s: sum(len(r["sent_ids"]) for r in out["refs"] if r["split"] == s) for s in SPLITS})
    meta["summary"] = {"num_images": summary.num_images, "num_refs": summary.num_refs,
                       "num_sentences": summary.num_sentences}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthReferConfig) -> SynthReferSummary | None:
    meta = read_meta(root, GENERATOR, VERSION, config)
    if meta is None:
        return None
    files = [root / "refcoco" / "instances.json", root / "refcoco" / "refs(unc).p",
             root / "anns" / "refcoco.json"]
    feats = root / "coco_extract" / "train2014"
    n_feats = len(os.listdir(feats)) if feats.is_dir() else 0
    if not all(p.is_file() for p in files) or n_feats != config.total_images:
        return None
    s = meta["summary"]
    return SynthReferSummary(root, s["num_images"], s["num_refs"], s["num_sentences"])


def generate_refer(out_dir: Path, config: SynthReferConfig, progress: bool = True) -> SynthReferSummary:
    """Generate the grounding dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
