"""Write the synthetic world as COCO captions beside the built-in VQA data of the same images.

One checkpoint must both caption an image and answer questions about it, so the default
``layout="coco"`` is the built-in VQA dataset (``vqa_writer``, MCAN's layout) plus captions
of the very same scenes, in the files pycocotools reads (FORMATS.md section 7)::

    vqa/...                                    the VQA v2 files, exactly as generate_vqa writes them
    coco_extract/{train2014,val2014,test2015}/ their bottom-up .npz region features
    annotations/captions_train2014.json        COCO captions: images, annotations, info, licenses
    annotations/captions_val2014.json
    annotations/image_info_test2015.json       test images only (no captions), as COCO ships them
    synth_meta.json                            written last: the VQA meta (question families, scenes)
                                               plus the caption kind of every annotation id

``layout="flickr30k"`` writes Flickr30K as users convert Karpathy's split to the COCO layout,
with no VQA files::

    flickr30k/captions_{train,val,test}.json   COCO layout; file_name "<flickr id>.jpg"
    flickr30k/features/{train,val,test}/<flickr id>.jpg.npz
    synth_meta.json

Captions are ``expressions.generate_captions``'s five Flickr30K-like kinds; every one is true of
its scene. Deterministic in the seed (scenes and features come from the VQA writer's streams,
captions from their own), and atomic: built in a temporary sibling, renamed into place.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np
from tqdm import tqdm

from nas.synth.expressions import CAPTION_KINDS, generate_captions
from nas.synth.features import make_prototypes
from nas.synth.store import check_fields, ensure_dataset, read_meta, seeded_rng, write_json
from nas.synth.vqa_writer import (SPLITS as VQA_SPLITS, SynthVqaConfig, build_vqa, check_vqa_fields, image_ids,
                                  image_scene, questions_path, scene_record, write_image_features)

__all__ = ["GENERATOR", "LAYOUTS", "SPLITS", "VERSION", "SynthCaptionConfig", "SynthCaptionSummary", "caption_files",
           "feature_dir", "generate_caption"]

GENERATOR = "vlnas-synth-caption"
VERSION = 1
LAYOUTS = ("coco", "flickr30k")
SPLITS = ("train", "val", "test")  # the VQA writer's split numbers 0, 1, 2 (its scene streams)
_SUBTYPES = {split: subtype for split, subtype, _ in VQA_SPLITS}  # train -> train2014 ...
_STREAM_CAPTIONS, _STREAM_FLICKR_IDS = 61, 62  # VQA's streams are 1..6: captions never shift a scene
_FLICKR_IDS = (10_000_000, 4_000_000_000)  # Flickr30K photo ids: 8 to 10 digits
_INFO = MappingProxyType({"description": "vlnas synthetic CLEVR-like captions; NOT the real COCO or Flickr30K data",
                          "url": "http://cocodataset.org", "version": "1.0", "year": 2014,
                          "contributor": GENERATOR})
_LICENSES = ({"url": "http://creativecommons.org/licenses/by/4.0/", "id": 1,
              "name": "Creative Commons Attribution 4.0 International License"},)


@dataclass(frozen=True)
class SynthCaptionConfig:
    """SynthVqaConfig's fields (same meaning, same checks) plus the captions'.

    With ``layout="flickr30k"`` the question fields are unused: that layout has no VQA files.
    """

    seed: int = 0
    train_images: int = 2000
    val_images: int = 400
    test_images: int = 400  # coco: image_info_test2015.json, no captions; flickr30k: captioned
    captions_per_image: int = 5  # COCO and Flickr30K have five references per image
    layout: str = "coco"
    questions_per_image: int = 6
    vg_image_share: float = 0.05
    vg_questions_per_image: int = 3
    feature_dim: int = 256
    min_objects: int = 3
    max_objects: int = 7
    max_distractors: int = 3
    feature_noise: float = 1.0
    annotator_noise: float = 0.2
    image_width: int = 480
    image_height: int = 320

    def __post_init__(self) -> None:
        check_fields(self, [("captions_per_image", 1 <= self.captions_per_image <= 10, "in 1..10"),
                            ("layout", self.layout in LAYOUTS, f"one of {', '.join(LAYOUTS)}")])
        check_vqa_fields(self)

    def vqa_config(self) -> SynthVqaConfig:
        """The VQA writer's config of the same images."""
        return SynthVqaConfig(**{f.name: getattr(self, f.name) for f in fields(SynthVqaConfig)})


@dataclass(frozen=True)
class SynthCaptionSummary:
    root: Path
    layout: str
    num_images: dict[str, int]  # "train", "val", "test" (coco: also "vg", train images with VG questions)
    num_captions: dict[str, int]  # per captioned split
    num_questions: dict[str, int]  # the VQA questions per split; empty in the flickr30k layout


def caption_files(root: Path, layout: str) -> dict[str, Path]:
    """Each split's COCO-layout file: references, or for COCO's test split the image-info file."""
    if layout == "flickr30k":
        return {split: root / "flickr30k" / f"captions_{split}.json" for split in SPLITS}
    return {"train": root / "annotations" / "captions_train2014.json",
            "val": root / "annotations" / "captions_val2014.json",
            "test": root / "annotations" / "image_info_test2015.json"}


def feature_dir(root: Path, layout: str, split: str) -> Path:
    """The folder of a split's bottom-up ``.npz`` files (the VQA ones in the coco layout)."""
    if layout == "flickr30k":
        return root / "flickr30k" / "features" / split
    return root / "coco_extract" / _SUBTYPES[split]


def _file_name(layout: str, split: str, image_id: int) -> str:
    return f"{image_id}.jpg" if layout == "flickr30k" else f"COCO_{_SUBTYPES[split]}_{image_id:012d}.jpg"


def _flickr_ids(config: SynthCaptionConfig) -> dict[str, list[int]]:
    counts = [config.train_images, config.val_images, config.test_images]
    low, high = _FLICKR_IDS
    drawn = seeded_rng(config, _STREAM_FLICKR_IDS).choice(high - low, size=sum(counts), replace=False) + low
    out, start = {}, 0
    for split, n in zip(SPLITS, counts):
        out[split] = sorted(int(i) for i in drawn[start:start + n])
        start += n
    return out


def _captioned(split: str, layout: str) -> bool:
    return layout == "flickr30k" or split != "test"  # COCO's test2015 captions are withheld


class _Writer:
    """Collects one dataset's caption files; annotation ids run across splits, as COCO's do."""

    def __init__(self, config: SynthCaptionConfig) -> None:
        self.config = config
        self.next_id = 1
        self.kinds: dict[str, str] = {}  # annotation id -> caption kind
        self.scenes: dict[str, dict] = {}

    def split(self, tmp: Path, split: str, ids: list[int], bar: tqdm, protos: np.ndarray | None = None) -> int:
        """Write one split's file (and with ``protos``, its features); returns its caption count."""
        config, layout = self.config, self.config.layout
        split_no, vqa = SPLITS.index(split), config.vqa_config()
        images, annotations = [], []
        for index, image_id in enumerate(ids):
            scene = image_scene(vqa, split_no, index)
            if protos is not None:
                write_image_features(feature_dir(tmp, layout, split) / f"{_file_name(layout, split, image_id)}.npz",
                                     scene, vqa, protos, split_no, index)
                self.scenes[str(image_id)] = scene_record(scene)
            images.append({"id": image_id, "file_name": _file_name(layout, split, image_id),
                           "height": scene.height, "width": scene.width})
            if _captioned(split, layout):
                rng = seeded_rng(config, _STREAM_CAPTIONS, split_no, index)
                for kind, text in generate_captions(scene, config.captions_per_image, rng):
                    annotations.append({"id": self.next_id, "image_id": image_id, "caption": text})
                    self.kinds[str(self.next_id)] = kind
                    self.next_id += 1
            bar.update(1)
        document = {"info": dict(_INFO), "licenses": list(_LICENSES), "images": images}
        if _captioned(split, layout):
            document["annotations"] = annotations
        write_json(caption_files(tmp, layout)[split], document)
        return len(annotations)


def _build(tmp: Path, config: SynthCaptionConfig, progress: bool) -> SynthCaptionSummary:
    writer = _Writer(config)
    if config.layout == "coco":
        vqa = build_vqa(tmp, config.vqa_config(), progress)
        meta = json.loads((tmp / "synth_meta.json").read_text(encoding="utf-8"))
        ids, protos, num_questions = image_ids(config.vqa_config()), None, dict(vqa.num_questions)
    else:
        meta = {"scenes": writer.scenes}
        ids, protos, num_questions = _flickr_ids(config), make_prototypes(config.seed, config.feature_dim), {}
    splits = [s for s in SPLITS if ids[s]]  # no test file when test_images=0
    with tqdm(total=sum(len(ids[s]) for s in splits), desc=f"synthetic {config.layout} captions", unit="img",
              disable=not progress) as bar:
        num_captions = {s: writer.split(tmp, s, ids[s], bar, protos) for s in splits}
    num_captions = {s: n for s, n in num_captions.items() if _captioned(s, config.layout)}
    num_images = {s: len(ids[s]) for s in SPLITS}
    if config.layout == "coco":
        num_images["vg"] = vqa.num_images["vg"]
    kinds = Counter(writer.kinds.values())
    meta.update({"generator": GENERATOR, "version": VERSION, "config": asdict(config), "layout": config.layout,
                 "caption_kinds": writer.kinds, "kind_counts": {k: kinds[k] for k in CAPTION_KINDS},
                 "summary": {"num_images": num_images, "num_captions": num_captions,
                             "num_questions": num_questions}})
    write_json(tmp / "synth_meta.json", meta)  # written last (over the VQA one): its presence marks completeness
    return SynthCaptionSummary(tmp, config.layout, num_images, num_captions, num_questions)


def _read_summary(root: Path, config: SynthCaptionConfig) -> SynthCaptionSummary | None:
    """The summary of a complete dataset for ``config`` at ``root``, else None."""
    meta = read_meta(root, GENERATOR, VERSION, config)
    if meta is None:
        return None
    summary = meta["summary"]
    for split in SPLITS:
        count = summary["num_images"][split]
        folder = feature_dir(root, config.layout, split)
        on_disk = sum(1 for p in folder.iterdir() if p.suffix == ".npz") if folder.is_dir() else 0
        if on_disk != count or (count and not caption_files(root, config.layout)[split].is_file()):
            return None
        if config.layout == "coco" and not questions_path(root, _SUBTYPES[split]).is_file():
            return None
    return SynthCaptionSummary(root, config.layout, summary["num_images"], summary["num_captions"],
                               summary["num_questions"])


def generate_caption(out_dir: Path, config: SynthCaptionConfig, progress: bool = True) -> SynthCaptionSummary:
    """Generate the dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
