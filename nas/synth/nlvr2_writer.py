"""Write the synthetic CLEVR-like world as NLVR2 statements about image pairs + LXMERT obj36 TSVs.

Layout (FORMATS.md section 3; lil-lab's ``nlvr2/data`` and LXMERT's ``data/nlvr2_imgfeat``)::

    data/{train,dev,test1}.json             JSON lines, labels the strings "True"/"False"
    nlvr2_imgfeat/train_obj36.tsv           the train images
    nlvr2_imgfeat/valid_obj36.tsv           the dev images (LXMERT calls dev "valid")
    nlvr2_imgfeat/test_obj36.tsv            the test1 images
    synth_meta.json                         scenes and statement families; written last

As in NLVR2, a *set* holds several image pairs and a few sentences, and every sentence is
labelled against every pair of its set: identifier ``split-set-pair-sentence``. A sentence is
kept only when it is true for half of its set's pairs (rounded either way), so each sentence
appears with both labels, the labels are balanced and consistency (all pairs of a sentence
right) cannot be had from the text alone. A set's later pairs are edits of its first (a few
objects change colour, shape or material), as NLVR2's images of a set come from one search
query. Statements count and compare objects described by up to ``phrase_attributes``
attributes in the left, the right or both images. Generation is deterministic in
the seed and atomic, like the other synthetic writers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from nas.features_tsv import ObjRecord, write_obj_tsv
from nas.io import atomic_write_jsonl
from nas.synth.features import Prototypes, make_prototypes, region_features, scene_record
from nas.synth.statements import NUMBERS, count_matching
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.vqa_questions import _phrase
from nas.synth.world import ATTRIBUTE_VALUES, ATTRIBUTES, Scene, sample_scene

__all__ = ["FAMILIES", "GENERATOR", "SPLITS", "SynthNlvr2Config", "SynthNlvr2Summary", "VERSION",
           "annotations_path", "feature_path", "generate_nlvr2"]

GENERATOR = "vlnas-synth-nlvr2"
VERSION = 3  # 3: the TSV's label columns hold each region's class and colour (2: zeros)
# (split, feature TSV): LXMERT's file names for lil-lab's train, dev and test1.
SPLITS = (("train", "train_obj36.tsv"), ("dev", "valid_obj36.tsv"), ("test1", "test_obj36.tsv"))
FAMILIES = ("side_exist", "both_exist", "one_exist", "side_count", "more", "total")
_STREAM_SET, _STREAM_FEATURES = 41, 42
_SENTENCE_TRIES = 300  # draws per sentence before the set's scenes are drawn again
_PHRASE_ATTRIBUTES = ("color", "shape", "material", "size")
_EDITABLE = ("color", "shape", "material")


@dataclass(frozen=True)
class SynthNlvr2Config:
    seed: int = 0  # every random draw (prototypes, scenes, sentences) derives from it
    train_sets: int = 1000  # sets per split; a set has pairs_per_set image pairs
    dev_sets: int = 200
    test1_sets: int = 200
    pairs_per_set: int = 4  # each sentence of a set is labelled against every pair of it
    sentences_per_set: int = 2
    phrase_attributes: int = 2  # a statement describes objects by 1..this many attributes ("red cube": 2)
    # The statement families drawn from (FAMILIES); the existential ones alone (side_exist,
    # both_exist, one_exist) ask for no exact count.
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    # A set's pairs are edits of its first pair, as NLVR2's images of a set come from one search
    # query: each later image changes the colour, shape or material of 1..set_edits objects of the
    # first pair's image on its side. 0 draws every image independently.
    set_edits: int = 2
    feature_dim: int = 256  # D of the region features; LXMERT's release uses 2048
    min_objects: int = 2  # objects per image, inclusive
    max_objects: int = 5
    max_distractors: int = 2  # extra part/background boxes per image, 0..max
    feature_noise: float = 1.0  # noise norm / signal norm, as in SynthVqaConfig
    image_width: int = 480
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_sets", self.train_sets >= 1, ">= 1"),
            ("dev_sets", self.dev_sets >= 1, ">= 1"),
            ("test1_sets", self.test1_sets >= 1, ">= 1"),
            ("pairs_per_set", 2 <= self.pairs_per_set <= 8, "in 2..8"),
            ("sentences_per_set", 1 <= self.sentences_per_set <= 6, "in 1..6"),
            ("phrase_attributes", 1 <= self.phrase_attributes <= 4, "in 1..4"),
            ("set_edits", self.set_edits >= 0, ">= 0"),
            ("families", bool(self.families) and set(self.families) <= set(FAMILIES)
             and len(set(self.families)) == len(self.families), f"distinct names from {', '.join(FAMILIES)}"),
            ("max_distractors", self.max_distractors >= 0, ">= 0"),
        ]
        check_fields(self, checks + scene_checks(self))


@dataclass(frozen=True)
class SynthNlvr2Summary:
    root: Path
    num_examples: dict[str, int]  # keyed "train", "dev", "test1"
    num_true: dict[str, int]
    families: dict[str, int]  # sentences per family, all splits together


def annotations_path(root: Path, split: str) -> Path:
    return root / "data" / f"{split}.json"


def feature_path(root: Path, split: str) -> Path:
    return root / "nlvr2_imgfeat" / dict(SPLITS)[split]


# ---- statements --------------------------------------------------------------------------

def _statement(family: str, attrs: dict[str, str], side: str, number: int) -> tuple[str, Callable[[int, int], bool]]:
    """The sentence and its truth as a function of the (left, right) counts of ``attrs``."""
    one, many = _phrase(attrs), _phrase(attrs, plural=True)
    other = "right" if side == "left" else "left"
    if family == "side_exist":
        return f"The {side} image contains a {one}.", lambda l, r: (l if side == "left" else r) > 0
    if family == "both_exist":
        return f"Both images contain a {one}.", lambda l, r: l > 0 and r > 0
    if family == "one_exist":
        return f"Exactly one image contains a {one}.", lambda l, r: (l > 0) != (r > 0)
    if family == "side_count":
        noun = one if number == 1 else many
        return (f"The {side} image contains exactly {NUMBERS[number]} {noun}.",
                lambda l, r: (l if side == "left" else r) == number)
    if family == "more":
        return (f"There are more {many} in the {side} image than in the {other} image.",
                lambda l, r: (l > r) if side == "left" else (r > l))
    if family == "total":
        noun = one if number == 1 else many
        return f"The two images contain {NUMBERS[number]} {noun} in total.", lambda l, r: l + r == number
    raise ValueError(f"unknown family {family!r}")


def _draw_statement(rng: np.random.Generator, pairs: list[tuple[Scene, Scene]], phrase_attributes: int,
                    families: list[str]) -> tuple[str, str, list[bool]]:
    """One random statement about the objects of the set: (family, sentence, truth per pair)."""
    family = families[int(rng.integers(len(families)))]
    left, right = pairs[int(rng.integers(len(pairs)))]
    scene = left if rng.random() < 0.5 else right
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    # Some of an existing object's attributes, so the description is true somewhere.
    chosen = rng.choice(len(_PHRASE_ATTRIBUTES), size=int(rng.integers(1, phrase_attributes + 1)), replace=False)
    attrs = {_PHRASE_ATTRIBUTES[int(k)]: obj.attr(_PHRASE_ATTRIBUTES[int(k)]) for k in sorted(chosen)}
    side = "left" if rng.random() < 0.5 else "right"
    number = int(rng.integers(1, 4)) if family == "side_count" else int(rng.integers(1, 5))
    sentence, holds = _statement(family, attrs, side, number)
    return family, sentence, [holds(count_matching(l, attrs), count_matching(r, attrs)) for l, r in pairs]


def _sentences(config: SynthNlvr2Config, rng: np.random.Generator, pairs: list[tuple[Scene, Scene]]
               ) -> list[tuple[str, str, list[bool]]] | None:
    """``sentences_per_set`` distinct statements, each true for half of the pairs, or None."""
    half = {config.pairs_per_set // 2, (config.pairs_per_set + 1) // 2}
    chosen: list[tuple[str, str, list[bool]]] = []
    for _ in range(_SENTENCE_TRIES):
        family, sentence, truth = _draw_statement(rng, pairs, config.phrase_attributes, config.families)
        if sum(truth) in half and all(sentence != s for _, s, _ in chosen):
            chosen.append((family, sentence, truth))
            if len(chosen) == config.sentences_per_set:
                return chosen
    return None


def _edit(rng: np.random.Generator, scene: Scene, most: int) -> Scene:
    """``scene`` with 1..``most`` of its objects given another colour, shape or material (boxes and
    sizes stay, so the edit is what a look-alike photo of the same query would change)."""
    objects = list(scene.objects)
    count = int(rng.integers(1, min(most, len(objects)) + 1))
    for index in rng.choice(len(objects), size=count, replace=False):
        attribute = _EDITABLE[int(rng.integers(len(_EDITABLE)))]
        values = [v for v in ATTRIBUTE_VALUES[attribute] if v != objects[int(index)].attr(attribute)]
        objects[int(index)] = replace(objects[int(index)], **{attribute: values[int(rng.integers(len(values)))]})
    return replace(scene, objects=tuple(objects))


def _set(config: SynthNlvr2Config, split_no: int, index: int
         ) -> tuple[list[tuple[Scene, Scene]], list[tuple[str, str, list[bool]]]]:
    rng = seeded_rng(config, _STREAM_SET, split_no, index)
    def draw() -> Scene:
        return sample_scene(rng, min_objects=config.min_objects, max_objects=config.max_objects,
                            max_distractors=config.max_distractors, width=config.image_width,
                            height=config.image_height)

    while True:  # a set whose scenes admit no balanced sentence is drawn again (rare)
        if config.set_edits:
            first = (draw(), draw())
            pairs = [first] + [(_edit(rng, first[0], config.set_edits), _edit(rng, first[1], config.set_edits))
                               for _ in range(config.pairs_per_set - 1)]
        else:
            pairs = [(draw(), draw()) for _ in range(config.pairs_per_set)]
        sentences = _sentences(config, rng, pairs)
        if sentences is not None:
            return pairs, sentences


# ---- writing -----------------------------------------------------------------------------

def _split(config: SynthNlvr2Config, split_no: int, split: str, sets: int, protos: Prototypes, meta: dict,
           examples: list[dict], bar: tqdm) -> Iterator[ObjRecord]:
    """Yield one split's feature rows while filling its ``examples`` and ``meta``."""
    image_no = 0
    for index in range(sets):
        pairs, sentences = _set(config, split_no, index)
        for pair_no, scenes in enumerate(pairs):
            for side, scene in enumerate(scenes):
                image_id = f"{split}-{index}-{pair_no}-img{side}"
                meta["scenes"][image_id] = [{a: o.attr(a) for a in ATTRIBUTES} | {"region": o.region}
                                            for o in scene.objects]
                feats = region_features(scene, protos, config.feature_noise,
                                        seeded_rng(config, _STREAM_FEATURES, split_no, image_no))
                image_no += 1
                yield scene_record(image_id, scene, feats)
        for sentence_no, (family, sentence, truth) in enumerate(sentences):
            meta["families"][f"{split}-{index}--{sentence_no}"] = family
            for pair_no, label in enumerate(truth):
                label_text = "True" if label else "False"
                examples.append({  # the released files' keys, in their order
                    "identifier": f"{split}-{index}-{pair_no}-{sentence_no}", "sentence": sentence,
                    "label": label_text, "left_url": f"synth://{split}-{index}-{pair_no}-img0.png",
                    "right_url": f"synth://{split}-{index}-{pair_no}-img1.png",
                    "writer": "synth", "synset": family, "query": family,
                    "validation": {"synth": label_text}, "extra_validations": {},
                    **({"directory": str(index % 100)} if split == "train" else {})})
        bar.update(1)


def _build(tmp: Path, config: SynthNlvr2Config, progress: bool) -> SynthNlvr2Summary:
    protos = make_prototypes(config.seed, config.feature_dim)
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config), "families": {},
                  "scenes": {}}
    sizes = {"train": config.train_sets, "dev": config.dev_sets, "test1": config.test1_sets}
    examples: dict[str, list[dict]] = {split: [] for split, _ in SPLITS}
    with tqdm(total=sum(sizes.values()), desc="synthetic NLVR2", unit="set", disable=not progress) as bar:
        for split_no, (split, _) in enumerate(SPLITS):
            # Streamed straight into the TSV: the split's examples are complete once its rows are.
            write_obj_tsv(feature_path(tmp, split),
                          _split(config, split_no, split, sizes[split], protos, meta, examples[split], bar))
            atomic_write_jsonl(annotations_path(tmp, split), examples[split])
    counts = Counter(meta["families"].values())
    summary = SynthNlvr2Summary(root=tmp, num_examples={s: len(v) for s, v in examples.items()},
                                num_true={s: sum(e["label"] == "True" for e in v) for s, v in examples.items()},
                                families={f: counts[f] for f in FAMILIES})
    meta["summary"] = {"num_examples": summary.num_examples, "num_true": summary.num_true,
                       "families": summary.families}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthNlvr2Config) -> SynthNlvr2Summary | None:
    """The summary of a complete dataset for ``config`` at ``root``, else None."""
    meta = read_meta(root, GENERATOR, VERSION, config)
    files = [annotations_path(root, s) for s, _ in SPLITS] + [feature_path(root, s) for s, _ in SPLITS]
    if meta is None or not all(p.is_file() for p in files):
        return None
    summary = meta["summary"]
    return SynthNlvr2Summary(root, summary["num_examples"], summary["num_true"], summary["families"])


def generate_nlvr2(out_dir: Path, config: SynthNlvr2Config, progress: bool = True) -> SynthNlvr2Summary:
    """Generate the NLVR2-format dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
