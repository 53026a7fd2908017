"""Write synthetic image-text matching data in SCAN's released ``f30k_precomp`` format.

Per split (train, dev, test), FORMATS.md section 5 and MMNAS.md section 6: ``{split}_ims.npy``
(N_img, R, D) float32 region features in image order, ``{split}_caps.txt`` with five consecutive
captions per image, and ``{split}_ids.txt`` with one line per image for train and one per
caption for dev/test (MmNas's loader keeps every fifth). Two vlnas extensions that SCAN lacks but
relation attention needs sit beside them: ``{split}_boxes.npy`` (N_img, R, 4) float32 xyxy pixels
and ``{split}_image_size.npy`` (N_img, 2) int64 (height, width).

Images are the same kind of scenes as the VQA and grounding data, seen through exactly R detector
proposals (MmNas's fixed-36 features). Generation is deterministic in the seed (every file is
byte-identical across runs) and atomic, like the other synthetic writers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nas.synth.expressions import generate_captions
from nas.synth.features import make_prototypes, proposal_features
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.world import PROPOSALS_PER_OBJECT, propose_regions, sample_scene

__all__ = ["CAPTIONS_PER_IMAGE", "GENERATOR", "SPLITS", "SynthScanConfig", "SynthScanSummary", "VERSION",
           "generate_scan"]

GENERATOR = "vlnas-synth-scan"
VERSION = 2
SPLITS = ("train", "dev", "test")
CAPTIONS_PER_IMAGE = 5  # fixed by the format: SCAN infers im_div = 5 from the file lengths
_F30K_IMGIDS = 31_014  # Karpathy's Flickr30K imgids are 0..31013; ids look like them
_STREAM_IDS, _STREAM_SCENE, _STREAM_PROPOSALS, _STREAM_FEATURES, _STREAM_CAPTIONS = 21, 22, 23, 24, 25
_FILES = ("ims.npy", "caps.txt", "ids.txt", "boxes.npy", "image_size.npy")


@dataclass(frozen=True)
class SynthScanConfig:
    seed: int = 0  # every random draw (prototypes, ids, scenes, boxes, captions) derives from it
    train_images: int = 1500  # images per split; captions = 5 * images
    dev_images: int = 200
    test_images: int = 200
    regions: int = 36  # R, fixed for every image like MmNas's bua fix36 features
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    min_objects: int = 3  # objects per image, inclusive; captions need two for a relation
    max_objects: int = 7
    feature_noise: float = 1.0  # noise norm / signal norm, as in SynthVqaConfig
    image_width: int = 480  # CLEVR's render size
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("dev_images", self.dev_images >= 1, ">= 1"),
            ("test_images", self.test_images >= 1, ">= 1"),
            ("regions", self.regions >= PROPOSALS_PER_OBJECT * self.max_objects,
             f">= {PROPOSALS_PER_OBJECT} * max_objects ({PROPOSALS_PER_OBJECT} proposals per object)"),
        ]
        check_fields(self, checks + scene_checks(self))


@dataclass(frozen=True)
class SynthScanSummary:
    root: Path
    num_images: dict[str, int]  # keyed by SPLITS
    num_captions: dict[str, int]
    caption_kinds: dict[str, int]  # captions per kind, all splits together


def split_path(root: Path, split: str, name: str) -> Path:
    """``root/f30k_precomp/{split}_{name}``, e.g. ``split_path(root, "dev", "caps.txt")``."""
    return root / "f30k_precomp" / f"{split}_{name}"


def _image_ids(config: SynthScanConfig) -> dict[str, list[int]]:
    sizes = [config.train_images, config.dev_images, config.test_images]
    pool = max(_F30K_IMGIDS, sum(sizes))
    ids = seeded_rng(config, _STREAM_IDS).choice(pool, size=sum(sizes), replace=False)
    starts = np.cumsum([0, *sizes])
    return {s: sorted(int(i) for i in ids[a:b]) for s, a, b in zip(SPLITS, starts[:-1], starts[1:])}


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def _write_split(tmp: Path, config: SynthScanConfig, split_no: int, image_ids: list[int], meta: dict,
                 kinds: Counter, bar: tqdm) -> None:
    split = SPLITS[split_no]
    protos = make_prototypes(config.seed, config.feature_dim)
    n = len(image_ids)
    ims = np.zeros((n, config.regions, config.feature_dim), dtype=np.float32)
    boxes = np.zeros((n, config.regions, 4), dtype=np.float32)
    captions: list[str] = []
    for index, image_id in enumerate(image_ids):
        scene = sample_scene(seeded_rng(config, _STREAM_SCENE, split_no, index), min_objects=config.min_objects,
                             max_objects=config.max_objects, max_distractors=0,
                             width=config.image_width, height=config.image_height)
        props = propose_regions(scene, config.regions, seeded_rng(config, _STREAM_PROPOSALS, split_no, index))
        ims[index] = proposal_features(scene, props, protos, config.feature_noise,
                                       seeded_rng(config, _STREAM_FEATURES, split_no, index))
        boxes[index] = props.boxes
        made = generate_captions(scene, CAPTIONS_PER_IMAGE, seeded_rng(config, _STREAM_CAPTIONS, split_no, index))
        captions += [text for _, text in made]
        kinds.update(kind for kind, _ in made)
        meta["images"][f"{split}/{image_id}"] = {
            "index": index, "caption_kinds": [kind for kind, _ in made],
            "objects": [{"color": o.color, "shape": o.shape, "material": o.material, "size": o.size,
                         "box": [round(v, 2) for v in scene.box(k)]} for k, o in enumerate(scene.objects)]}
        bar.update(1)
    np.save(split_path(tmp, split, "ims.npy"), ims)
    np.save(split_path(tmp, split, "boxes.npy"), boxes)
    sizes = np.tile(np.array([config.image_height, config.image_width], dtype=np.int64), (n, 1))
    np.save(split_path(tmp, split, "image_size.npy"), sizes)
    _write_text(split_path(tmp, split, "caps.txt"), captions)
    # MmNas reads train ids once per image and dev/test ids once per caption (it keeps every 5th).
    per_image = 1 if split == "train" else CAPTIONS_PER_IMAGE
    _write_text(split_path(tmp, split, "ids.txt"), [str(i) for i in image_ids for _ in range(per_image)])


def _build(tmp: Path, config: SynthScanConfig, progress: bool) -> SynthScanSummary:
    ids = _image_ids(config)
    (tmp / "f30k_precomp").mkdir()
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config), "images": {}}
    kinds: Counter = Counter()
    with tqdm(total=sum(len(v) for v in ids.values()), desc="synthetic f30k_precomp", unit="img",
              disable=not progress) as bar:
        for split_no, split in enumerate(SPLITS):
            _write_split(tmp, config, split_no, ids[split], meta, kinds, bar)
    summary = SynthScanSummary(root=tmp, num_images={s: len(ids[s]) for s in SPLITS},
                               num_captions={s: CAPTIONS_PER_IMAGE * len(ids[s]) for s in SPLITS},
                               caption_kinds=dict(sorted(kinds.items())))
    meta["summary"] = {"num_images": summary.num_images, "num_captions": summary.num_captions,
                       "caption_kinds": summary.caption_kinds}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthScanConfig) -> SynthScanSummary | None:
    meta = read_meta(root, GENERATOR, VERSION, config)
    if meta is None or not all(split_path(root, s, f).is_file() for s in SPLITS for f in _FILES):
        return None
    s = meta["summary"]
    return SynthScanSummary(root, s["num_images"], s["num_captions"], s["caption_kinds"])


def generate_scan(out_dir: Path, config: SynthScanConfig, progress: bool = True) -> SynthScanSummary:
    """Generate the retrieval dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
