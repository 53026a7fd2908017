"""Write the synthetic VQA world in the released VQA v2 + bottom-up .npz formats.

The layout is MCAN's ``datasets/`` folder (FORMATS.md sections 1 and 2a), so the loader that
reads the generated data reads the real release unchanged. Like MCAN's, it includes the Visual
Genome augmentation pair ``vqa/VG_questions.json`` + ``vqa/VG_annotations.json`` (the VQA v2
question/annotation formats): extra questions about some train images, whose features are the
train2014 ones, as MCAN's VG questions are about COCO images. Generation is deterministic in the
seed: every image draws from its own random stream keyed by (seed, stream, split, index), and the
JSON files are byte-identical across runs. Everything is built in a temporary sibling directory
that is renamed into place at the end, so a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from tqdm import tqdm

from nas.errors import UserError
from nas.synth.features import make_prototypes, region_features
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.vqa_questions import FAMILIES, FAMILY_ANSWER_TYPES, Question, annotate, generate_questions
from nas.synth.world import Scene, sample_scene

__all__ = ["GENERATOR", "SPLITS", "SynthSummary", "SynthVqaConfig", "VERSION", "VG_ANNOTATIONS", "VG_QUESTIONS",
           "build_vqa", "check_vqa_fields", "feature_path", "generate_vqa", "image_ids", "image_scene", "scene_record",
           "vg_paths", "write_image_features"]

GENERATOR = "vlnas-synth-clevr"
VERSION = 2  # 2: adds the VG_questions.json / VG_annotations.json pair
# (summary key, VQA data_subtype, has annotations): test2015 ships questions only.
SPLITS = (("train", "train2014", True), ("val", "val2014", True), ("test", "test2015", False))
_MAX_COCO_ID = 581_929  # ids look like COCO's: positive ints below the largest train2014 id
_STREAM_IDS, _STREAM_SCENE, _STREAM_FEATURES, _STREAM_QUESTIONS, _STREAM_VG, _STREAM_VG_IMAGES = 1, 2, 3, 4, 5, 6
VG_QUESTIONS = "VG_questions.json"  # MCAN/MmNas names, beside the VQA v2 files in vqa/
VG_ANNOTATIONS = "VG_annotations.json"
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
    # Visual Genome augmentation: this share of the train images (rounded up) gets
    # vg_questions_per_image extra questions in VG_*.json; 100 images x 3 = 300 at the default.
    vg_image_share: float = 0.05
    vg_questions_per_image: int = 3
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    min_objects: int = 3  # objects per image, inclusive range; >= 2 for two-object questions
    max_objects: int = 7
    max_distractors: int = 3  # extra part/background boxes per image, 0..max
    feature_noise: float = 1.0  # noise norm / signal norm; 1.0 keeps linear colour probes ~99%
    annotator_noise: float = 0.2  # mean chance that one of the 10 annotators deviates
    image_width: int = 480  # CLEVR's render size
    image_height: int = 320

    def __post_init__(self) -> None:
        check_vqa_fields(self)


def check_vqa_fields(config: Any) -> None:
    """SynthVqaConfig's checks, for it and for any config that carries its fields (the caption
    writer's); the one-line error names ``config``'s own class."""
    checks = [
        ("train_images", config.train_images >= 1, ">= 1"),
        ("val_images", config.val_images >= 1, ">= 1"),
        ("test_images", config.test_images >= 0, ">= 0"),
        ("questions_per_image", 1 <= config.questions_per_image <= 999, "in 1..999"),
        ("vg_image_share", 0 <= config.vg_image_share <= 1, "in 0..1"),
        # VG ids continue each image's train ids (image_id * 1000 + k), so both must fit in 1000.
        ("vg_questions_per_image", 1 <= config.vg_questions_per_image <= 1000 - config.questions_per_image,
         "in 1..(1000 - questions_per_image)"),
        ("max_distractors", config.max_distractors >= 0, ">= 0"),
        ("annotator_noise", 0 <= config.annotator_noise <= 0.5, "in 0..0.5"),
    ]
    check_fields(config, checks + scene_checks(config))
    total = config.train_images + config.val_images + config.test_images
    if total > _MAX_COCO_ID:
        raise UserError(f"{type(config).__name__}: {total} images exceed the {_MAX_COCO_ID} COCO ids")


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    num_images: dict[str, int]  # keyed "train", "val", "test", "vg" (train images with VG questions)
    num_questions: dict[str, int]
    families: dict[str, int]  # questions per family, all splits together


def questions_path(root: Path, subtype: str) -> Path:
    return root / "vqa" / f"v2_OpenEnded_mscoco_{subtype}_questions.json"


def annotations_path(root: Path, subtype: str) -> Path:
    return root / "vqa" / f"v2_mscoco_{subtype}_annotations.json"


def feature_path(root: Path, subtype: str, image_id: int) -> Path:
    return root / "coco_extract" / subtype / f"COCO_{subtype}_{image_id:012d}.jpg.npz"


def image_ids(config: SynthVqaConfig) -> dict[str, list[int]]:
    """The sorted image ids of each split ("train", "val", "test")."""
    sizes = {"train": config.train_images, "val": config.val_images, "test": config.test_images}
    ids = seeded_rng(config, _STREAM_IDS).choice(_MAX_COCO_ID, size=sum(sizes.values()), replace=False) + 1
    out, start = {}, 0
    for split, n in sizes.items():
        out[split] = sorted(int(i) for i in ids[start:start + n])
        start += n
    return out


def vg_paths(root: Path) -> tuple[Path, Path]:
    """The Visual Genome augmentation pair (questions, annotations), as MCAN places it."""
    return root / "vqa" / VG_QUESTIONS, root / "vqa" / VG_ANNOTATIONS


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
    if not all(p.is_file() for p in vg_paths(root)):
        return None
    return SynthSummary(root, summary["num_images"], summary["num_questions"], summary["families"])


def _vg_images(config: SynthVqaConfig) -> frozenset[int]:
    """Positions in the train split of the images that also get VG questions."""
    # round() first: 0.05 * 60 is 3.0000000000000004 in floating point, which ceil would make 4.
    count = math.ceil(round(config.vg_image_share * config.train_images, 9))
    chosen = seeded_rng(config, _STREAM_VG_IMAGES).choice(config.train_images, size=count, replace=False)
    return frozenset(int(i) for i in chosen)


def image_scene(config: SynthVqaConfig, split_no: int, index: int) -> Scene:
    """The scene of the ``index``-th image of split ``split_no`` (0 train, 1 val, 2 test): the same
    for every writer that shares this config, so other files can describe the VQA images."""
    return sample_scene(seeded_rng(config, _STREAM_SCENE, split_no, index),
                        min_objects=config.min_objects, max_objects=config.max_objects,
                        max_distractors=config.max_distractors,
                        width=config.image_width, height=config.image_height)


def write_image_features(path: Path, scene: Scene, config: SynthVqaConfig, protos: np.ndarray, split_no: int,
                         index: int) -> None:
    """Write the bottom-up ``.npz`` of ``image_scene(config, split_no, index)`` to ``path``."""
    feats = region_features(scene, protos, config.feature_noise,
                            seeded_rng(config, _STREAM_FEATURES, split_no, index))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same keys, dtypes and (D, N) layout as bottom-up-attention's tools/extract_feat.py.
    np.savez_compressed(path, x=np.ascontiguousarray(feats.T), bbox=np.asarray(scene.boxes, dtype=np.float32),
                        num_bbox=len(scene.boxes), image_h=scene.height, image_w=scene.width)


def scene_record(scene: Scene) -> dict:
    """What synth_meta.json records of one image's scene: its objects and distractor regions."""
    return {"objects": [{**{a: o.attr(a) for a in ("color", "shape", "material", "size")}, "region": o.region}
                        for o in scene.objects],
            "distractors": [{"kind": d.kind, "region": d.region, "parent": d.parent} for d in scene.distractors]}


@dataclass
class _VgQuestions:
    """The VG pair being collected while the train split is written."""

    images: frozenset[int]  # train positions that get VG questions
    questions: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)


def _records(q: Question, image_id: int, qid: int, noise: float, rng: np.random.Generator,
             meta: dict) -> tuple[dict, dict]:
    """One question's entry in the questions file and in the annotations file."""
    meta["families"][str(qid)] = q.family
    answers = annotate(q.answer, noise, rng)
    return ({"image_id": image_id, "question": q.text, "question_id": qid},
            {"question_type": q.question_type, "multiple_choice_answer": q.answer, "answers": answers,
             "image_id": image_id, "answer_type": q.answer_type, "question_id": qid})


def _add_vg(vg: _VgQuestions, config: SynthVqaConfig, scene: Scene, image_id: int, index: int,
            asked: set[str], meta: dict) -> None:
    """VG questions about one train image: texts its VQA questions do not already ask."""
    rng = seeded_rng(config, _STREAM_VG, 0, index)
    fresh = [q for q in generate_questions(scene, config.questions_per_image + config.vg_questions_per_image, rng)
             if q.text not in asked]
    for j, q in enumerate(fresh[:config.vg_questions_per_image]):
        # After the image's own VQA ids (k < questions_per_image): unique, and still image_id * 1000 + k.
        qid = image_id * 1000 + config.questions_per_image + j
        question, annotation = _records(q, image_id, qid, config.annotator_noise, rng, meta)
        vg.questions.append(question)
        vg.annotations.append(annotation)


def _write_split(tmp: Path, config: SynthVqaConfig, split_no: int, subtype: str, annotated: bool,
                 image_ids: list[int], meta: dict, bar: tqdm, vg: _VgQuestions | None = None) -> int:
    """Write one split's features, questions and annotations; returns its question count.

    With ``vg``, the images it names also get VG questions, collected into it.
    """
    protos = make_prototypes(config.seed, config.feature_dim)
    questions, annotations = [], []
    for index, image_id in enumerate(image_ids):
        scene = image_scene(config, split_no, index)
        write_image_features(feature_path(tmp, subtype, image_id), scene, config, protos, split_no, index)
        q_rng = seeded_rng(config, _STREAM_QUESTIONS, split_no, index)
        asked = set()
        for k, q in enumerate(generate_questions(scene, config.questions_per_image, q_rng)):
            question, annotation = _records(q, image_id, image_id * 1000 + k, config.annotator_noise, q_rng, meta)
            questions.append(question)
            annotations.append(annotation)
            asked.add(q.text)
        if vg is not None and index in vg.images:
            _add_vg(vg, config, scene, image_id, index, asked, meta)
        meta["scenes"][str(image_id)] = scene_record(scene)
        bar.update(1)
    write_json(questions_path(tmp, subtype), {
        "info": dict(_INFO), "task_type": "Open-Ended", "data_type": "mscoco", "license": dict(_LICENSE),
        "data_subtype": subtype, "questions": questions})
    if annotated:
        write_json(annotations_path(tmp, subtype), {
            "info": dict(_INFO), "license": dict(_LICENSE), "data_subtype": subtype,
            "annotations": annotations, "data_type": "mscoco"})
    return len(questions)


def _write_vg(tmp: Path, vg: _VgQuestions) -> None:
    # The loaders (MCAN, MmNas, ours) read only the "questions" / "annotations" lists; the
    # other keys mirror the VQA v2 files, with data_subtype naming the source.
    questions, annotations = vg_paths(tmp)
    write_json(questions, {"info": dict(_INFO), "task_type": "Open-Ended", "data_type": "mscoco",
                           "license": dict(_LICENSE), "data_subtype": "vg", "questions": vg.questions})
    write_json(annotations, {"info": dict(_INFO), "license": dict(_LICENSE), "data_subtype": "vg",
                             "annotations": vg.annotations, "data_type": "mscoco"})


def _build(tmp: Path, config: SynthVqaConfig, progress: bool) -> SynthSummary:
    ids = image_ids(config)
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config),
                  "answer_types": {f: list(t) for f, t in FAMILY_ANSWER_TYPES.items()},
                  "families": {}, "scenes": {}}
    num_questions = {}
    vg = _VgQuestions(_vg_images(config))
    with tqdm(total=sum(len(v) for v in ids.values()), desc="synthetic VQA", unit="img",
              disable=not progress) as bar:
        for split_no, (split, subtype, annotated) in enumerate(SPLITS):
            num_questions[split] = _write_split(tmp, config, split_no, subtype, annotated,
                                                ids[split], meta, bar, vg if split == "train" else None)
    _write_vg(tmp, vg)
    num_questions["vg"] = len(vg.questions)
    num_images = {s: len(v) for s, v in ids.items()}
    num_images["vg"] = len({q["image_id"] for q in vg.questions})
    counts = Counter(meta["families"].values())
    summary = SynthSummary(root=tmp, num_images=num_images, num_questions=num_questions,
                           families={f: counts[f] for f in FAMILIES})
    meta["summary"] = {"num_images": summary.num_images, "num_questions": num_questions,
                       "families": summary.families}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def build_vqa(tmp: Path, config: SynthVqaConfig, progress: bool = True) -> SynthSummary:
    """Write the whole dataset into the fresh folder ``tmp`` (a writer that adds files to it makes
    it atomic with ``store.build_atomically``)."""
    return _build(tmp, config, progress)


def generate_vqa(out_dir: Path, config: SynthVqaConfig, progress: bool = True) -> SynthSummary:
    """Generate the dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
