"""Write the synthetic CLEVR-like world as CLEVR-Ref+ scenes, refexps and IEP-Ref's HDF5 files.

Layout (FORMATS.md section 6; CLEVR-Ref+'s release and IEP-Ref's ``data/`` folder)::

    scenes/clevr_ref+_{train,val}_scenes.json    CLEVR scenes + obj_mask (1-based keys, RLE over 320x480)
    refexps/clevr_ref+_{train,val}_refexps.json  {"refexps": [{refexp, image_index, image_filename,
                                                  refexp_family_index, program}]}
    features/{train,val}_features.h5            "features" float32 (images, C, grid, grid), row = image_index
    features/{train,val}_refexps.h5             IEP-Ref's preprocessed expressions (iep_files=true)
    features/vocab.json                         refexp_token_to_idx, program_token_to_idx,
                                                answer_token_to_idx: null (from the train split)
    synth_meta.json                             families and summary; written last

Scenes, masks and grid features are made in ``clevr_ref_scenes``, the expressions and programs
in ``clevr_ref_refexps``, the IEP files in ``clevr_ref_iep``. IEP-Ref stores every expression's
mask as 320 x 320 float64, about 0.8 MB before compression; they are written gzip-compressed
(level 1, one row per chunk): at the default sizes (1000 + 200 images, 4,800 expressions) they
take 23 MB and the grid features 157 MB, written in about 30 s. ``iep_files=false`` skips them: the ``clevr_ref`` task reads only the
scenes, refexps and features. Generation is deterministic in the seed and atomic, like the other
synthetic writers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nas.io import atomic_write_json
from nas.synth.clevr_ref_iep import RefexpH5Writer, build_vocab, encode_tokens, iep_tokenize, program_tokens
from nas.synth.clevr_ref_refexps import FAMILIES, draw_refexps
from nas.synth.clevr_ref_scenes import grid_features, render_scene
from nas.synth.features import make_prototypes
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.world import sample_scene

__all__ = ["FAMILIES", "GENERATOR", "SPLITS", "SynthClevrRefConfig", "SynthClevrRefSummary", "VERSION",
           "features_path", "generate_clevr_ref", "refexps_path", "scenes_path"]

GENERATOR = "vlnas-synth-clevr-ref"
VERSION = 1
SPLITS = ("train", "val")
_STREAM_SCENE, _STREAM_FEATURES, _STREAM_REFEXPS = 51, 52, 53


@dataclass(frozen=True)
class SynthClevrRefConfig:
    seed: int = 0  # every random draw (prototypes, scenes, expressions, noise) derives from it
    train_images: int = 1000
    val_images: int = 200
    refexps_per_image: int = 4  # the families in turn; fewer when a scene admits fewer distinct ones
    grid: int = 16  # features are (C, grid, grid); CLEVR-Ref+'s 320x320 ResNet input gives 20x20
    feature_dim: int = 128  # C; IEP's ResNet-101 layer3 gives 1024
    min_objects: int = 3  # objects per image, inclusive
    max_objects: int = 8
    feature_noise: float = 1.0  # noise norm / signal norm, as in SynthVqaConfig
    image_width: int = 480  # CLEVR's render size; masks are image_height x image_width
    image_height: int = 320
    iep_files: bool = True  # write IEP-Ref's refexp HDF5 files and vocab.json

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("refexps_per_image", 1 <= self.refexps_per_image <= 20, "in 1..20"),
            ("grid", 2 <= self.grid <= min(self.image_width, self.image_height), "in 2..min(image size)"),
        ]
        check_fields(self, checks + scene_checks(self))


@dataclass(frozen=True)
class SynthClevrRefSummary:
    root: Path
    num_images: dict[str, int]  # keyed "train", "val"
    num_refexps: dict[str, int]
    families: dict[str, int]  # expressions per family, both splits together


def scenes_path(root: Path, split: str) -> Path:
    return root / "scenes" / f"clevr_ref+_{split}_scenes.json"


def refexps_path(root: Path, split: str) -> Path:
    return root / "refexps" / f"clevr_ref+_{split}_refexps.json"


def features_path(root: Path, split: str) -> Path:
    return root / "features" / f"{split}_features.h5"


def _split(config: SynthClevrRefConfig, split_no: int, split: str, count: int, root: Path,
           vocab: dict | None, bar: tqdm) -> tuple[list[dict], dict | None]:
    """Write one split's files; returns its expressions and the vocabulary (built on train)."""
    import h5py

    protos = make_prototypes(config.seed, config.feature_dim)
    scenes, refexps = [], []
    iep = RefexpH5Writer(root / "features" / f"{split}_refexps.h5") if config.iep_files else None
    path = features_path(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(path, "w") as features:
            grid = features.create_dataset("features", (count, config.feature_dim, config.grid, config.grid),
                                           np.float32)
            for index in range(count):
                rng = seeded_rng(config, _STREAM_SCENE, split_no, index)
                scene = sample_scene(rng, min_objects=config.min_objects, max_objects=config.max_objects,
                                     max_distractors=0, width=config.image_width, height=config.image_height)
                rendered = render_scene(scene, split, index, rng)
                scenes.append(rendered.record)
                grid[index] = grid_features(rendered, protos, config.grid, config.feature_noise,
                                            seeded_rng(config, _STREAM_FEATURES, split_no, index))
                drawn = draw_refexps(rendered.record, rendered.attributes, config.refexps_per_image,
                                     seeded_rng(config, _STREAM_REFEXPS, split_no, index))
                for refexp in drawn:
                    refexps.append({"refexp": refexp["refexp"], "image_index": index,
                                    "image_filename": rendered.record["image_filename"],
                                    "refexp_family_index": FAMILIES.index(refexp["family"]),
                                    "program": refexp["program"]})
                    if iep is not None:
                        iep.add_mask(np.isin(rendered.labels, refexp["program"][-1]["_output"]))
                bar.update(1)
        info = {"split": split, "version": "synth", "license": "synthetic"}
        atomic_write_json(scenes_path(root, split), {"info": info, "scenes": scenes}, indent=None)
        atomic_write_json(refexps_path(root, split), {"info": info, "refexps": refexps}, indent=None)
        if iep is not None:
            words = [iep_tokenize(r["refexp"]) for r in refexps]
            programs = [program_tokens(r["program"]) for r in refexps]
            if vocab is None:
                vocab = {"refexp_token_to_idx": build_vocab(words), "program_token_to_idx": build_vocab(programs),
                         "answer_token_to_idx": None}
            iep.finish(encode_tokens(words, vocab["refexp_token_to_idx"]),
                       encode_tokens(programs, vocab["program_token_to_idx"]),
                       [r["image_index"] for r in refexps], [r["refexp_family_index"] for r in refexps])
    finally:
        if iep is not None:
            iep.close()
    return refexps, vocab


def _build(tmp: Path, config: SynthClevrRefConfig, progress: bool) -> SynthClevrRefSummary:
    sizes = {"train": config.train_images, "val": config.val_images}
    per_split: dict[str, list[dict]] = {}
    vocab = None
    with tqdm(total=sum(sizes.values()), desc="synthetic CLEVR-Ref+", unit="img", disable=not progress) as bar:
        for split_no, split in enumerate(SPLITS):
            per_split[split], vocab = _split(config, split_no, split, sizes[split], tmp, vocab, bar)
    if vocab is not None:
        atomic_write_json(tmp / "features" / "vocab.json", vocab, indent=None)
    counts = Counter(FAMILIES[r["refexp_family_index"]] for refexps in per_split.values() for r in refexps)
    summary = SynthClevrRefSummary(root=tmp, num_images=sizes,
                                   num_refexps={s: len(v) for s, v in per_split.items()},
                                   families={f: counts[f] for f in FAMILIES})
    meta = {"generator": GENERATOR, "version": VERSION, "config": asdict(config), "families": list(FAMILIES),
            "summary": {"num_images": summary.num_images, "num_refexps": summary.num_refexps,
                        "families": summary.families}}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthClevrRefConfig) -> SynthClevrRefSummary | None:
    """The summary of a complete dataset for ``config`` at ``root``, else None."""
    meta = read_meta(root, GENERATOR, VERSION, config)
    files = [f(root, s) for s in SPLITS for f in (scenes_path, refexps_path, features_path)]
    if meta is None or not all(p.is_file() for p in files):
        return None
    summary = meta["summary"]
    return SynthClevrRefSummary(root, summary["num_images"], summary["num_refexps"], summary["families"])


def generate_clevr_ref(out_dir: Path, config: SynthClevrRefConfig, progress: bool = True) -> SynthClevrRefSummary:
    """Generate the CLEVR-Ref+-format dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
