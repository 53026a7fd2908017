"""Write the synthetic VQA world in the released VQA v2 + bottom-up .npz formats.

The layout is MCAN's ``datasets/`` folder (FORMATS.md sections 1 and 2a), so the loader that
reads the generated data reads the real release unchanged. Generation is deterministic in the
seed: every image draws from its own random stream keyed by (seed, stream, split, index), and the
JSON files are byte-identical across runs. Everything is built in a temporary sibling directory
that is renamed into place at the end, so a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from tqdm import tqdm

from nas.errors import UserError
from nas.synth.features import make_prototypes, region_features
from nas.synth.store import build_atomically, check_fields, read_meta, write_json
from nas.synth.vqa_questions import FAMILIES, FAMILY_ANSWER_TYPES, annotate, generate_questions
from nas.synth.world import sample_scene

__all__ = ["GENERATOR", "SPLITS", "SynthSummary", "SynthVqaConfig", "VERSION", "generate_vqa"]

GENERATOR = "vlnas-synth-clevr"
VERSION = 1
# (summary key, VQA data_subtype, has annotations): test2015 ships questions only.
SPLITS = (("train", "train2014", True), ("val", "val2014", True), ("test", "test2015", False))
_MAX_COCO_ID = 581_929  # ids look like COCO's: positive ints below the largest train2014 id
_STREAM_IDS, _STREAM_SCENE, _STREAM_FEATURES, _STREAM_QUESTIONS = 1, 2, 3, 4
_INFO = MappingProxyType({"description": "vlnas synthetic CLEVR-like VQA; NOT the real VQA v2 data",
                         "url": "https://visualqa.org", "version": "2.0", "contributor": GENERATOR})
_LICENSE = MappingProxyType({"name": "Creative Commons Attribution 4.0 International License",
                            "url": "http://creativecommons.org/licenses/by/4.0/"})


@dataclass(frozen=True)
class SynthVqaConfig:
    seed: int = 0  # every random draw (prototypes, ids, scenes, questions) derives from it
    train_images: int = 2000  # images per split; questions = images * questions_per_image
    val_images: int = 400
    test_images: int = 400
    questions_per_image: int = 6  # one per family at the default; must stay below 1000 (qid)
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    min_objects: int = 3  # objects per image, inclusive range; >= 2 for two-object questions
    max_objects: int = 7
    max_distractors: int = 3  # extra part/background boxes per image, 0..max
    feature_noise: float = 1.0  # noise norm / signal norm; 1.0 keeps linear colour probes ~99%
    annotator_noise: float = 0.2  # mean chance that one of the 10 annotators deviates
    image_width: int = 480  # CLEVR's render size
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("test_images", self.test_images >= 0, ">= 0"),
            ("questions_per_image", 1 <= self.questions_per_image <= 999, "in 1..999"),
            ("feature_dim", self.feature_dim >= 8, ">= 8"),
            ("min_objects", 2 <= self.min_objects <= self.max_objects, "in 2..max_objects"),
            ("max_objects", self.max_objects <= 10, "<= 10"),
            ("max_distractors", self.max_distractors >= 0, ">= 0"),
            ("feature_noise", self.feature_noise >= 0, ">= 0"),
            ("annotator_noise", 0 <= self.annotator_noise <= 0.5, "in 0..0.5"),
            ("image_width", self.image_width >= 64, ">= 64"),
            ("image_height", self.image_height >= 64, ">= 64"),
        ]
        check_fields(self, checks)
        total = self.train_images + self.val_images + self.test_images
        if total > _MAX_COCO_ID:
            raise UserError(f"SynthVqaConfig: {total} images exceed the {_MAX_COCO_ID} COCO ids")


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    num_images: dict[str, int]  # keyed "train", "val", "test"
    num_questions: dict[str, int]
    families: dict[str, int]  # questions per family, all splits together


def questions_path(root: Path, subtype: str) -> Path:
    return root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json"


def annotations_path(root: Path, subtype: str) -> Path:
    return root / "vqa" / f"v2_mscoco_{subtype}_annotations.json"


def feature_path(root: Path, subtype: str, image_id: int) -> Path:
    return root / "coco_extract" / subtype / f"COCO_{subtype}_{image_id:012d}.jpg.npz"


def _rng(config: SynthVqaConfig, stream: int, split: int = 0, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream, split, index])


def _image_ids(config: SynthVqaConfig) -> dict[str, list[int]]:
    sizes = {"train": config.train_images, "val": config.val_images, "test": config.test_images}
    ids = _rng(config, _STREAM_IDS).choice(_MAX_COCO_ID, size=sum(sizes.values()), replace=False) + 1
    out, start = {}, 0
    for split, n in sizes.items():
        out[split] = sorted(int(i) for i in ids[start:start + n])
        start += n
    return out


def _read_summary(root: Path, config: SynthVqaConfig) -> SynthSummary | None:
    """The summary of a complete dataset for ``config`` at ``root``, else None."""
    meta = read_meta(root, GENERATOR, VERSION, config)
    if meta is None:
        return None
    summary = meta["summary"]
    for split, subtype, annotated in SPLITS:
        files = [questions_path(root, subtype)] + ([annotations_path(root, subtype)] if annotated else [])
        feats = root / "coco_extract" / subtype
        n_feats = len(os.listdir(feats)) if feats.is_dir() else 0
        if not all(p.is_file() for p in files) or n_feats != summary["num_images"][split]:
            return None
    return SynthSummary(root, summary["num_images"], summary["num_questions"], summary["families"])


def _write_split(tmp: Path, config: SynthVqaConfig, split_no: int, subtype: str, annotated: bool,
                 image_ids: list[int], meta: dict, bar: tqdm) -> int:
    """Write one split's features, questions and annotations; returns its question count."""
    protos = make_prototypes(config.seed, config.feature_dim)
    questions, annotations = [], []
    for index, image_id in enumerate(image_ids):
        scene = sample_scene(_rng(config, _STREAM_SCENE, split_no, index),
                             min_objects=config.min_objects, max_objects=config.max_objects,
                             max_distractors=config.max_distractors,
                             width=config.image_width, height=config.image_height)
        feats = region_features(scene, protos, config.feature_noise,
                                _rng(config, _STREAM_FEATURES, split_no, index))
        path = feature_path(tmp, subtype, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same keys, dtypes and (D, N) layout as bottom-up-attention's tools/extract_feat.py.
        np.savez_compressed(path, x=np.ascontiguousarray(feats.T),
                            bbox=np.asarray(scene.boxes, dtype=np.float32),
                            num_bbox=len(scene.boxes), image_h=scene.height, image_w=scene.width)
        q_rng = _rng(config, _STREAM_QUESTIONS, split_no, index)
        for k, q in enumerate(generate_questions(scene, config.questions_per_image, q_rng)):
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": q.text, "question_id": qid})
            answers = annotate(q.answer, config.annotator_noise, q_rng)
            annotations.append({"question_type": q.question_type, "multiple_choice_answer": q.answer,
                                "answers": answers, "image_id": image_id, "answer_type": q.answer_type,
                                "question_id": qid})
            meta["families"][str(qid)] = q.family
        meta["scenes"][str(image_id)] = {
            "objects": [{**{a: o.attr(a) for a in ("color", "shape", "material", "size")},
                         "region": o.region} for o in scene.objects],
            "distractors": [{"kind": d.kind, "region": d.region, "parent": d.parent}
                            for d in scene.distractors]}
        bar.update(1)
    write_json(questions_path(tmp, subtype), {
        "info": dict(_INFO), "task_type": "Open-Ended", "data_type": "mscoco", "license": dict(_LICENSE),
        "data_subtype": subtype, "questions": questions})
    if annotated:
        write_json(annotations_path(tmp, subtype), {
            "info": dict(_INFO), "license": dict(_LICENSE), "data_subtype": subtype,
            "annotations": annotations, "data_type": "mscoco"})
    return len(questions)


def _build(tmp: Path, config: SynthVqaConfig, progress: bool) -> SynthSummary:
    ids = _image_ids(config)
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config),
                  "answer_types": {f: list(t) for f, t in FAMILY_ANSWER_TYPES.items()},
                  "families": {}, "scenes": {}}
    num_questions = {}
    with tqdm(total=sum(len(v) for v in ids.values()), desc="synthetic VQA", unit="img",
              disable=not progress) as bar:
        for split_no, (split, subtype, annotated) in enumerate(SPLITS):
            num_questions[split] = _write_split(tmp, config, split_no, subtype, annotated,
                                                ids[split], meta, bar)
    counts = Counter(meta["families"].values())
    summary = SynthSummary(root=tmp, num_images={s: len(v) for s, v in ids.items()},
                           num_questions=num_questions, families={f: counts[f] for f in FAMILIES})
    meta["summary"] = {"num_images": summary.num_images, "num_questions": num_questions,
                       "families": summary.families}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def generate_vqa(out_dir: Path, config: SynthVqaConfig, progress: bool = True) -> SynthSummary:
    """Generate the dataset into ``out_dir`` unless it already holds it for ``config``.

    An existing ``out_dir`` is replaced only when it is empty or a synthetic dataset made by
    this generator; anything else is refused rather than deleted.
    """
    out_dir = Path(out_dir)
    existing = _read_summary(out_dir, config)
    if existing is not None:
        return existing
    summary = build_atomically(out_dir, GENERATOR, lambda tmp: _build(tmp, config, progress))
    return SynthSummary(out_dir, summary.num_images, summary.num_questions, summary.families)
