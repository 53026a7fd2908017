"""Write the synthetic world as an LXMERT pre-training corpus: caption/question JSON + obj36 TSVs.

Layout (LXMERT's ``data/lxmert`` and ``data/mscoco_imgfeat``, FORMATS.md sections 2b and 3)::

    lxmert/mscoco_train.json                 training images: captions and questions
    lxmert/mscoco_minival.json               held-out images (pre-training validation)
    mscoco_imgfeat/train2014_obj36.tsv       their region features, with detector labels
    mscoco_imgfeat/val2014_obj36.tsv
    synth_meta.json                          written last: marks the dataset complete

Each JSON entry is LXMERT's ``{"img_id", "sentf": {source: [sentences]}, "labelf": {source:
[{answer: score}]}}``: five captions under ``mscoco`` (no labels) and questions of the VQA
families under ``vqa``, labelled with their answer (and, when ``statements_per_image`` > 0,
single-image statements in NLVR2's words under ``statements``, labelled yes or no). The TSVs
carry what LXMERT's masked-object objective predicts: ``objects_id`` is the region's class (the object's shape, or part /
background), ``attrs_id`` its colour (background boxes have none: confidence 0). Scenes and
features come from the same world and feature prototypes as the GQA writer, so a model
pre-trained on this corpus speaks the visual language of the built-in GQA data of the same
seed and ``feature_dim``; the images themselves are other scenes. Deterministic and atomic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from nas.features_tsv import ObjRecord, write_obj_tsv
from nas.synth.expressions import generate_captions
from nas.synth.features import ATTRIBUTE_CLASSES, OBJECT_CLASSES, make_prototypes, region_features, scene_record
from nas.synth.statements import StatementBalance, single_image_statements
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.vqa_questions import generate_questions
from nas.synth.world import Scene, sample_scene

__all__ = ["GENERATOR", "VERSION", "SPLITS", "SynthPretrainConfig", "SynthPretrainSummary", "corpus_path",
           "feature_path", "generate_pretrain"]

GENERATOR = "vlnas-synth-pretrain"
VERSION = 2  # 2: statements balanced per sentence
# split -> feature TSV, as LXMERT's loader pairs them (minival images are COCO val2014 images).
SPLITS = {"mscoco_train": "train2014_obj36.tsv", "mscoco_minival": "val2014_obj36.tsv"}
_COCO_IDS = 600_000  # COCO image numbers are below this
_STREAM_IDS, _STREAM_SCENE, _STREAM_FEATURES, _STREAM_CAPTIONS, _STREAM_QUESTIONS = 41, 42, 43, 44, 45
_STREAM_STATEMENTS = 46


@dataclass(frozen=True)
class SynthPretrainConfig:
    seed: int = 0  # same seed and feature_dim as the GQA data -> the same feature prototypes
    train_images: int = 4000
    val_images: int = 400
    captions_per_image: int = 5  # COCO has five
    questions_per_image: int = 6  # one per VQA family at the default
    # Single-image statements in NLVR2's words ("The image contains a red cube."), labelled "yes" or
    # "no" under the source "statements", half of them false by a minimal change (a hard negative).
    statements_per_image: int = 0
    statement_attributes: int = 2  # a statement describes objects by 1..this many attributes
    # Each sentence true for half of a split's images (NLVR2's balance). False writes them as
    # version 1 did, true and false alternately per image, where the words alone answer 68% of them.
    balance_statements: bool = True
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    min_objects: int = 3
    max_objects: int = 7
    max_distractors: int = 3  # part/background boxes per image, 0..max
    feature_noise: float = 1.0
    image_width: int = 480
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("captions_per_image", 1 <= self.captions_per_image <= 10, "in 1..10"),
            ("questions_per_image", 0 <= self.questions_per_image <= 20, "in 0..20"),
            ("statements_per_image", 0 <= self.statements_per_image <= 20, "in 0..20"),
            ("statement_attributes", 1 <= self.statement_attributes <= 4, "in 1..4"),
            ("max_distractors", self.max_distractors >= 0, ">= 0"),
        ]
        check_fields(self, checks + scene_checks(self))
        if self.train_images + self.val_images > _COCO_IDS:
            check_fields(self, [("train_images", False, f"<= {_COCO_IDS} - val_images")])


@dataclass(frozen=True)
class SynthPretrainSummary:
    root: Path
    num_images: dict[str, int]  # keyed by SPLITS
    num_sentences: dict[str, int]  # captions + questions per split


def corpus_path(root: Path, split: str) -> Path:
    return root / "lxmert" / f"{split}.json"


def feature_path(root: Path, split: str) -> Path:
    return root / "mscoco_imgfeat" / SPLITS[split]


def _image_names(config: SynthPretrainConfig) -> dict[str, list[str]]:
    drawn = seeded_rng(config, _STREAM_IDS).choice(_COCO_IDS, size=config.train_images + config.val_images,
                                                   replace=False)
    train, val = (sorted(int(i) for i in part) for part in np.split(drawn, [config.train_images]))
    return {"mscoco_train": [f"COCO_train2014_{n:012d}" for n in train],
            "mscoco_minival": [f"COCO_val2014_{n:012d}" for n in val]}


def _split(config: SynthPretrainConfig, split_no: int, names: list[str], entries: list[dict], kinds: Counter,
           bar: tqdm) -> Iterator[ObjRecord]:
    """Yield one split's feature rows while filling its corpus ``entries``."""
    protos = make_prototypes(config.seed, config.feature_dim)
    # Per split, so that each split's sentences are balanced on their own.
    balance = StatementBalance() if config.balance_statements else None
    for index, name in enumerate(names):
        scene = sample_scene(seeded_rng(config, _STREAM_SCENE, split_no, index), min_objects=config.min_objects,
                             max_objects=config.max_objects, max_distractors=config.max_distractors,
                             width=config.image_width, height=config.image_height)
        features = region_features(scene, protos, config.feature_noise,
                                   seeded_rng(config, _STREAM_FEATURES, split_no, index))
        captions = generate_captions(scene, config.captions_per_image,
                                     seeded_rng(config, _STREAM_CAPTIONS, split_no, index))
        questions = generate_questions(scene, config.questions_per_image,
                                       seeded_rng(config, _STREAM_QUESTIONS, split_no, index))
        kinds.update(kind for kind, _ in captions)
        kinds.update(q.family for q in questions)
        entry = {"img_id": name, "labelf": {"vqa": [{q.answer: 1.0} for q in questions]},
                 "sentf": {"mscoco": [text for _, text in captions], "vqa": [q.text for q in questions]}}
        if config.statements_per_image:
            statements = single_image_statements(scene, config.statements_per_image,
                                                 seeded_rng(config, _STREAM_STATEMENTS, split_no, index),
                                                 config.statement_attributes, balance)
            kinds["statement"] += len(statements)
            entry["sentf"]["statements"] = [text for text, _ in statements]
            entry["labelf"]["statements"] = [{"yes" if true else "no": 1.0} for _, true in statements]
        entries.append(entry)
        bar.update(1)
        yield scene_record(name, scene, features)


def _build(tmp: Path, config: SynthPretrainConfig, progress: bool) -> SynthPretrainSummary:
    names = _image_names(config)
    kinds: Counter = Counter()
    entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
    with tqdm(total=sum(len(v) for v in names.values()), desc="synthetic pre-training corpus", unit="img",
              disable=not progress) as bar:
        for split_no, split in enumerate(SPLITS):
            write_obj_tsv(feature_path(tmp, split), _split(config, split_no, names[split], entries[split], kinds, bar))
            feature_path(tmp, split).chmod(0o644)  # atomic_write leaves mkstemp's 0600
            write_json(corpus_path(tmp, split), entries[split])
    summary = SynthPretrainSummary(
        root=tmp, num_images={s: len(v) for s, v in names.items()},
        num_sentences={s: sum(len(v) for e in entries[s] for v in e["sentf"].values()) for s in SPLITS})
    meta = {"generator": GENERATOR, "version": VERSION, "config": asdict(config),
            "object_classes": list(OBJECT_CLASSES), "attribute_classes": list(ATTRIBUTE_CLASSES),
            "sentence_kinds": dict(sorted(kinds.items())),
            "summary": {"num_images": summary.num_images, "num_sentences": summary.num_sentences}}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthPretrainConfig) -> SynthPretrainSummary | None:
    meta = read_meta(root, GENERATOR, VERSION, config)
    files = [corpus_path(root, s) for s in SPLITS] + [feature_path(root, s) for s in SPLITS]
    if meta is None or not all(p.is_file() for p in files):
        return None
    return SynthPretrainSummary(root, meta["summary"]["num_images"], meta["summary"]["num_sentences"])


def generate_pretrain(out_dir: Path, config: SynthPretrainConfig, progress: bool = True) -> SynthPretrainSummary:
    """Generate the pre-training corpus into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
