"""Write the synthetic CLEVR-like world in GQA's released question files + LXMERT obj36 TSVs.

Layout (FORMATS.md sections 2b and 3, LXMERT's ``data/gqa`` + ``data/vg_gqa_imgfeat``)::

    questions/{train,val,testdev}_balanced_questions.json
    vg_gqa_imgfeat/vg_gqa_obj36.tsv        every train and val image
    vg_gqa_imgfeat/gqa_testdev_obj36.tsv   the testdev images
    synth_meta.json                        written last: marks the dataset complete

Questions are the VQA families of ``vqa_questions`` with their single canonical answer (GQA has
no annotator answers). Each one also gets what the GQA evaluator and programs need: a functional
program (``semantic``) read back from the question's regular template, structural/semantic types,
answer groups, ``entailed`` ids (questions of the same image whose answer follows from this one's)
and ``isBalanced``, false for a fixed share so the balanced-only accuracy differs from the plain one.
Region features come from ``features.region_features`` with pixel boxes, one row per scene region,
so ``num_boxes`` varies by image. Generation is deterministic in the seed and atomic, like the
other synthetic writers.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from nas.errors import UserError
from nas.features_tsv import ObjRecord, write_obj_tsv
from nas.synth.features import Prototypes, make_prototypes, region_features, scene_record
from nas.synth.store import check_fields, ensure_dataset, read_meta, scene_checks, seeded_rng, write_json
from nas.synth.vqa_questions import FAMILIES, RELATIONS, Question, _phrase, generate_questions
from nas.synth.world import ATTRIBUTE_VALUES, ATTRIBUTES, Scene, sample_scene

__all__ = ["GENERATOR", "SPLITS", "SynthGqaConfig", "SynthGqaSummary", "VERSION",
           "feature_path", "generate_gqa", "questions_path", "program_for"]

GENERATOR = "vlnas-synth-gqa"
VERSION = 2  # 2: the TSV's label columns hold each region's class and colour (1: zeros)
# (split, feature TSV): LXMERT keeps train and val images in one file and testdev in its own.
SPLITS = (("train", "vg_gqa_obj36.tsv"), ("val", "vg_gqa_obj36.tsv"), ("testdev", "gqa_testdev_obj36.tsv"))
_IMAGE_NUMBERS = (1_000_000, 10_000_000)  # imageId "n" + 7 digits, like GQA's "n1000123"
_QIDS_PER_IMAGE = 100  # question id = image number * 100 + k: unique across every split
_STREAM_IDS, _STREAM_SCENE, _STREAM_FEATURES, _STREAM_QUESTIONS, _STREAM_BALANCE = 31, 32, 33, 34, 35
_VALUE_ATTRIBUTE = {v: a for a, values in ATTRIBUTE_VALUES.items() for v in values}
_STRUCTURAL = {"exist": "verify", "compare_attribute": "compare"}  # the rest: by answer (yes/no -> verify)


@dataclass(frozen=True)
class SynthGqaConfig:
    seed: int = 0  # every random draw (prototypes, ids, scenes, questions, balance) derives from it
    train_images: int = 2000  # images per split, as SynthVqaConfig's; about 10 s on one core
    val_images: int = 400
    testdev_images: int = 400
    questions_per_image: int = 6  # one per family at the default
    # Share of query_attribute questions that get an extra exist question about the same object
    # ("What colour is the metal cube?" -> "Is there a red metal cube?"), so entailed is non-empty.
    entailed_share: float = 0.5
    unbalanced_share: float = 0.1  # of each split's questions, exactly rounded, isBalanced = false
    feature_dim: int = 256  # D of the region features; the real release uses 2048
    min_objects: int = 3  # objects per image, inclusive; >= 2 for two-object questions
    max_objects: int = 7
    max_distractors: int = 3  # extra part/background boxes per image, 0..max
    feature_noise: float = 1.0  # noise norm / signal norm, as in SynthVqaConfig
    image_width: int = 480  # CLEVR's render size
    image_height: int = 320

    def __post_init__(self) -> None:
        checks = [
            ("train_images", self.train_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("testdev_images", self.testdev_images >= 1, ">= 1"),
            # Own questions plus at most as many derived exist ones must fit in the 100 ids per image.
            ("questions_per_image", 1 <= self.questions_per_image <= _QIDS_PER_IMAGE // 2 - 1, "in 1..49"),
            ("entailed_share", 0 <= self.entailed_share <= 1, "in 0..1"),
            ("unbalanced_share", 0 <= self.unbalanced_share < 1, "in 0..1 (1 excluded)"),
            ("max_distractors", self.max_distractors >= 0, ">= 0"),
        ]
        check_fields(self, checks + scene_checks(self))
        total = self.train_images + self.val_images + self.testdev_images
        if total > _IMAGE_NUMBERS[1] - _IMAGE_NUMBERS[0]:
            raise UserError(f"SynthGqaConfig: {total} images exceed the "
                            f"{_IMAGE_NUMBERS[1] - _IMAGE_NUMBERS[0]} image ids")


@dataclass(frozen=True)
class SynthGqaSummary:
    root: Path
    num_images: dict[str, int]  # keyed "train", "val", "testdev"
    num_questions: dict[str, int]
    families: dict[str, int]  # questions per family, all splits together


def questions_path(root: Path, split: str) -> Path:
    return root / "questions" / f"{split}_balanced_questions.json"


def feature_path(root: Path, split: str) -> Path:
    return root / "vg_gqa_imgfeat" / dict(SPLITS)[split]


def _image_numbers(config: SynthGqaConfig) -> dict[str, list[int]]:
    sizes = {"train": config.train_images, "val": config.val_images, "testdev": config.testdev_images}
    low, high = _IMAGE_NUMBERS
    drawn = seeded_rng(config, _STREAM_IDS).choice(high - low, size=sum(sizes.values()), replace=False) + low
    out, start = {}, 0
    for split, n in sizes.items():
        out[split] = sorted(int(i) for i in drawn[start:start + n])
        start += n
    return out


# ---- programs, read back from the families' templates ------------------------------------

_TEMPLATES = {  # family -> patterns; groups are noun phrases, attributes and relations
    "exist": [re.compile(r"Is there a (?P<a>.+)\?")],
    "count": [re.compile(r"How many (?P<a>.+) are there\?")],
    "query_attribute": [re.compile(r"What (?P<attr>\w+) is the (?P<a>.+)\?")],
    "compare_attribute": [re.compile(r"Are the (?P<a>.+) and the (?P<b>.+) the same (?P<attr>\w+)\?"),
                          re.compile(r"Is the (?P<a>.+) the same (?P<attr>\w+) as the (?P<b>.+)\?")],
    "relation": [re.compile(r"What (?P<attr>\w+) is the thing (?P<rel>" + "|".join(RELATIONS) + r") the (?P<b>.+)\?"),
                 re.compile(r"Is the (?P<a>.+?) (?P<rel>" + "|".join(RELATIONS) + r") the (?P<b>.+)\?")],
    "nearest": [re.compile(r"What (?P<attr>\w+) is the thing nearest to the (?P<b>.+)\?")],
}


def _attributes(phrase: str) -> dict[str, str]:
    """The attribute set a noun phrase names: "large red cubes" -> size, color, shape."""
    *adjectives, noun = phrase.split()
    noun = noun[:-1] if noun.endswith("s") and noun[:-1] in ATTRIBUTE_VALUES["shape"] + ("thing",) else noun
    attrs = {_VALUE_ATTRIBUTE[w]: w for w in adjectives}
    if noun != "thing":
        attrs["shape"] = noun
    return attrs


def _parse(q: Question) -> dict[str, str]:
    for pattern in _TEMPLATES[q.family]:
        match = pattern.fullmatch(q.text)
        if match:
            return match.groupdict()
    raise ValueError(f"no {q.family} template matches {q.text!r}")  # a new template needs a pattern here


def _select(steps: list[dict], attrs: dict[str, str]) -> int:
    """Append select + filters for one description; returns the index of its last step."""
    steps.append({"operation": "select", "dependencies": [], "argument": attrs.get("shape", "thing")})
    for a in ATTRIBUTES:  # shape is the select; the others filter in a fixed order
        if a != "shape" and a in attrs:
            steps.append({"operation": f"filter {a}", "dependencies": [len(steps) - 1], "argument": attrs[a]})
    return len(steps) - 1


def program_for(q: Question) -> list[dict]:
    """The GQA-style functional program (``semantic``) of one generated question.

    select/filter pick the objects a phrase names; the last step computes the answer: exist,
    count, query, same <attr> (two objects), verify rel (subject, object), relate (the one thing
    standing in the relation to the object, or "nearest to" it) followed by query.
    """
    parts, steps = _parse(q), []
    if q.family in ("exist", "count"):
        last = _select(steps, _attributes(parts["a"]))
        steps.append({"operation": q.family, "dependencies": [last], "argument": ""})
    elif q.family == "query_attribute":
        last = _select(steps, _attributes(parts["a"]))
        steps.append({"operation": "query", "dependencies": [last], "argument": parts["attr"]})
    elif q.family == "compare_attribute":
        a, b = _select(steps, _attributes(parts["a"])), _select(steps, _attributes(parts["b"]))
        steps.append({"operation": f"same {parts['attr']}", "dependencies": [a, b], "argument": ""})
    elif parts.get("a") is not None:  # yes/no relation: is a <rel> b
        a, b = _select(steps, _attributes(parts["a"])), _select(steps, _attributes(parts["b"]))
        steps.append({"operation": "verify rel", "dependencies": [a, b], "argument": parts["rel"]})
    else:  # relation or nearest query: the thing <rel> b, then its attribute
        b = _select(steps, _attributes(parts["b"]))
        steps.append({"operation": "relate", "dependencies": [b], "argument": parts.get("rel", "nearest to")})
        steps.append({"operation": "query", "dependencies": [b + 1], "argument": parts["attr"]})
    return steps


# ---- the other record fields -------------------------------------------------------------

def _binary(q: Question) -> bool:
    return q.answer in ("yes", "no")


def _types(q: Question, parts: dict[str, str]) -> dict[str, str]:
    structural = _STRUCTURAL.get(q.family, "verify" if _binary(q) else "query")
    semantic = {"exist": "obj", "count": "obj", "query_attribute": "attr", "compare_attribute": "attr",
                "relation": "rel", "nearest": "rel"}[q.family]
    detailed = {"exist": "existAttr", "count": "countAttr", "compare_attribute": f"same{parts.get('attr', '').title()}",
                "query_attribute": f"query{parts.get('attr', '').title()}", "nearest": "nearestQuery",
                "relation": "relVerify" if _binary(q) else "relQuery"}[q.family]
    return {"structural": structural, "semantic": semantic, "detailed": detailed}


def _groups(q: Question, parts: dict[str, str]) -> dict[str, str | None]:
    # GQA's global group is the answer's category for open questions and null for binary ones;
    # the distribution metric uses it. The local group pins the family and the asked attribute.
    if _binary(q):
        return {"global": None, "local": f"{q.family}-{parts.get('attr', 'yes/no')}"}
    kind = "number" if q.family == "count" else parts["attr"]
    return {"global": kind, "local": f"{q.family}-{kind}"}


def _full_answer(q: Question, parts: dict[str, str]) -> str:
    yes = q.answer == "yes"
    if q.family == "exist":
        return f"Yes, there is a {parts['a']}." if yes else f"No, there is no {parts['a']}."
    if q.family == "count":
        noun = _phrase(_attributes(parts["a"])) if q.answer == "1" else parts["a"]  # "1 cube", "2 cubes"
        return f"There {'is' if q.answer == '1' else 'are'} {q.answer} {noun}."
    value = f"a {q.answer}" if q.answer in ATTRIBUTE_VALUES["shape"] else q.answer  # "is a cube", "is red"
    if q.family == "query_attribute":
        return f"The {parts['a']} is {value}."
    if q.family == "compare_attribute":
        return f"Yes, they are the same {parts['attr']}." if yes else f"No, they are different {parts['attr']}s."
    if _binary(q):
        return f"{'Yes' if yes else 'No'}, the {parts['a']} is {'' if yes else 'not '}{parts['rel']} the {parts['b']}."
    return f"The thing {parts.get('rel', 'nearest to')} the {parts['b']} is {value}."


def _claim(q: Question, parts: dict[str, str]) -> tuple[bool, dict[str, str]] | None:
    """What ``q``'s answer says about existence: (some object matches attrs?, attrs), if anything."""
    if q.family == "exist":
        return q.answer == "yes", _attributes(parts["a"])
    if q.family == "count":
        return q.answer != "0", _attributes(parts["a"])
    if q.family == "query_attribute":  # the described object exists and has the answered value
        return True, {**_attributes(parts["a"]), parts["attr"]: q.answer}
    return None


def _follows(claim: tuple[bool, dict[str, str]], q: Question, parts: dict[str, str]) -> bool:
    """Whether ``q``'s answer is implied by ``claim``."""
    exists, attrs = claim
    if q.family not in ("exist", "count"):
        return False
    target = _attributes(parts["a"]).items()
    if exists:  # something matches attrs, so it matches any looser description: exist -> yes
        return q.family == "exist" and target <= attrs.items()
    return attrs.items() <= target  # nothing matches attrs, nor anything stricter: no / 0


def _derived_exist(q: Question, parts: dict[str, str]) -> Question:
    """"Is there a <the query's object with its answered value>?", always yes."""
    attrs = {**_attributes(parts["a"]), parts["attr"]: q.answer}
    return Question("exist", f"Is there a {_phrase(attrs)}?", "yes", "yes/no")


# ---- writing -----------------------------------------------------------------------------

def _image_questions(config: SynthGqaConfig, scene: Scene, rng: np.random.Generator) -> list[Question]:
    questions = generate_questions(scene, config.questions_per_image, rng)
    asked = {q.text for q in questions}
    for q in list(questions):
        if q.family == "query_attribute" and rng.random() < config.entailed_share:
            extra = _derived_exist(q, _parse(q))
            if extra.text not in asked:
                questions.append(extra)
                asked.add(extra.text)
    return questions


def _records(image_id: str, number: int, questions: list[Question]) -> dict[str, dict]:
    """The GQA records of one image, keyed by question id; entailment is within the image."""
    qids = [str(number * _QIDS_PER_IMAGE + k) for k in range(len(questions))]
    parsed = [_parse(q) for q in questions]
    out = {}
    for qid, q, parts in zip(qids, questions, parsed):
        claim = _claim(q, parts)
        entailed = [] if claim is None else [other for other, o, p in zip(qids, questions, parsed)
                                             if other != qid and _follows(claim, o, p)]
        out[qid] = {"imageId": image_id, "question": q.text, "answer": q.answer,
                    "fullAnswer": _full_answer(q, parts), "isBalanced": True,
                    "types": _types(q, parts), "groups": _groups(q, parts), "entailed": entailed,
                    "equivalent": [qid], "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
                    "semantic": program_for(q)}
    return out


def _split(config: SynthGqaConfig, split_no: int, numbers: list[int], protos: Prototypes, meta: dict,
           records: dict[str, dict], bar: tqdm) -> Iterator[ObjRecord]:
    """Yield one split's feature rows while filling its question ``records`` and ``meta``."""
    for index, number in enumerate(numbers):
        image_id = f"n{number}"
        scene = sample_scene(seeded_rng(config, _STREAM_SCENE, split_no, index),
                             min_objects=config.min_objects, max_objects=config.max_objects,
                             max_distractors=config.max_distractors,
                             width=config.image_width, height=config.image_height)
        feats = region_features(scene, protos, config.feature_noise, seeded_rng(config, _STREAM_FEATURES, split_no, index))
        questions = _image_questions(config, scene, seeded_rng(config, _STREAM_QUESTIONS, split_no, index))
        for qid, record in _records(image_id, number, questions).items():
            records[qid] = record
            meta["families"][qid] = questions[int(qid) % _QIDS_PER_IMAGE].family
        meta["scenes"][image_id] = {
            "objects": [{**{a: o.attr(a) for a in ATTRIBUTES}, "region": o.region} for o in scene.objects],
            "distractors": [{"kind": d.kind, "region": d.region, "parent": d.parent} for d in scene.distractors]}
        bar.update(1)
        yield scene_record(image_id, scene, feats)


def _unbalance(config: SynthGqaConfig, split_no: int, records: dict[str, dict]) -> None:
    # An exact, seeded share per split, so the balanced-only metric always differs from plain accuracy.
    count = round(config.unbalanced_share * len(records))
    chosen = seeded_rng(config, _STREAM_BALANCE, split_no).choice(len(records), size=count, replace=False)
    qids = list(records)
    for k in chosen:
        records[qids[int(k)]]["isBalanced"] = False


def _build(tmp: Path, config: SynthGqaConfig, progress: bool) -> SynthGqaSummary:
    numbers = _image_numbers(config)
    protos = make_prototypes(config.seed, config.feature_dim)
    meta: dict = {"generator": GENERATOR, "version": VERSION, "config": asdict(config), "families": {},
                  "scenes": {}}
    per_split: dict[str, dict[str, dict]] = {split: {} for split, _ in SPLITS}
    with tqdm(total=sum(len(v) for v in numbers.values()), desc="synthetic GQA", unit="img",
              disable=not progress) as bar:
        rows = {split: _split(config, split_no, numbers[split], protos, meta, per_split[split], bar)
                for split_no, (split, _) in enumerate(SPLITS)}
        # Streamed straight into the TSVs: the records of a split are complete once its rows are.
        write_obj_tsv(feature_path(tmp, "train"), (r for split in ("train", "val") for r in rows[split]))
        write_obj_tsv(feature_path(tmp, "testdev"), rows["testdev"])
    for split in ("train", "testdev"):  # atomic_write leaves mkstemp's 0600; the JSON files are 0644
        feature_path(tmp, split).chmod(0o644)
    for split_no, (split, _) in enumerate(SPLITS):
        _unbalance(config, split_no, per_split[split])
        write_json(questions_path(tmp, split), per_split[split])
    counts = Counter(meta["families"].values())
    summary = SynthGqaSummary(root=tmp, num_images={s: len(v) for s, v in numbers.items()},
                              num_questions={s: len(v) for s, v in per_split.items()},
                              families={f: counts[f] for f in FAMILIES})
    meta["summary"] = {"num_images": summary.num_images, "num_questions": summary.num_questions,
                       "families": summary.families}
    write_json(tmp / "synth_meta.json", meta)  # written last: its presence marks completeness
    return summary


def _read_summary(root: Path, config: SynthGqaConfig) -> SynthGqaSummary | None:
    """The summary of a complete dataset for ``config`` at ``root``, else None."""
    meta = read_meta(root, GENERATOR, VERSION, config)
    files = [questions_path(root, s) for s, _ in SPLITS] + [feature_path(root, s) for s, _ in SPLITS]
    if meta is None or not all(p.is_file() for p in files):
        return None
    summary = meta["summary"]
    return SynthGqaSummary(root, summary["num_images"], summary["num_questions"], summary["families"])


def generate_gqa(out_dir: Path, config: SynthGqaConfig, progress: bool = True) -> SynthGqaSummary:
    """Generate the GQA-format dataset into ``out_dir`` unless it already holds it for ``config``."""
    return ensure_dataset(Path(out_dir), GENERATOR, lambda root: _read_summary(root, config),
                          lambda tmp: _build(tmp, config, progress))
