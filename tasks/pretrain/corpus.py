"""LXMERT's pre-training corpus files (``data/lxmert/mscoco_train.json`` and the like).

Each file is a JSON list of images::

    {"img_id": "COCO_train2014_000000000009",
     "sentf": {"mscoco": ["caption", ...], "vqa": ["question?", ...]},
     "labelf": {"vqa": [{"answer": score, ...}, ...]}}

The i-th entry of ``labelf[source]`` labels ``sentf[source][i]``; sources without labels
(captions) have no ``labelf`` entry. Every sentence becomes one pre-training sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError, described, shown
from nas.io import atomic_write_json, read_json

__all__ = ["Sentence", "read_corpus", "write_corpus"]


@dataclass(frozen=True)
class Sentence:
    img_id: str
    text: str
    source: str  # e.g. "mscoco" (a caption) or "vqa" (a question)
    label: dict[str, float] | None  # answer -> score, for questions


def read_corpus(path: str | Path) -> list[Sentence]:
    """Every sentence of a corpus file in file order; a malformed entry is a one-line error."""
    path = Path(path)
    data = read_json(path, "pre-training corpus")
    if not isinstance(data, list):
        raise UserError(f"{path}: a pre-training corpus must be a JSON list of images, got {described(data)}")
    sentences: list[Sentence] = []
    for number, entry in enumerate(data):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected an object with img_id and sentf, got {described(entry)}")
        img_id, sentf, labelf = entry.get("img_id"), entry.get("sentf"), entry.get("labelf", {})
        if not isinstance(img_id, str) or not img_id:
            raise UserError(f"{where}: img_id must be a non-empty string, got {described(img_id)}")
        if not isinstance(sentf, dict):
            raise UserError(f"{where} ({img_id}): sentf must map sources to sentence lists, got {described(sentf)}")
        if not isinstance(labelf, dict):
            raise UserError(f"{where} ({img_id}): labelf must map sources to label lists, got {described(labelf)}")
        unknown = [source for source in labelf if source not in sentf]
        if unknown:
            raise UserError(f"{where} ({img_id}): labelf.{unknown[0]} labels no sentf source")
        for source, texts in sentf.items():
            sentences += _source(f"{where} ({img_id})", img_id, source, texts, labelf.get(source))
    return sentences


def _source(where: str, img_id: str, source: str, texts: Any, labels: Any) -> list[Sentence]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{where}: sentf.{source} must be a list of strings, got {shown(texts)}")
    if labels is None:
        return [Sentence(img_id, text, source, None) for text in texts]
    if not isinstance(labels, list) or len(labels) != len(texts):
        count = len(labels) if isinstance(labels, list) else described(labels)
        raise UserError(f"{where}: labelf.{source} must be a list of {len(texts)} label objects (one per "
                        f"sentence), got {count}")
    out = []
    for k, (text, label) in enumerate(zip(texts, labels)):
        if not isinstance(label, dict) or not all(isinstance(a, str) and isinstance(s, (int, float))
                                                  and not isinstance(s, bool) and s >= 0 for a, s in label.items()):
            raise UserError(f"{where}: labelf.{source}[{k}] must map answers to non-negative scores, "
                            f"got {shown(label)}")
        out.append(Sentence(img_id, text, source, {a: float(s) for a, s in label.items()}))
    return out


def write_corpus(path: str | Path, sentences: list[Sentence]) -> Path:
    """Write ``sentences`` in LXMERT's layout (one entry per image, first-seen order), atomically."""
    entries: dict[str, dict] = {}
    for s in sentences:
        entry = entries.setdefault(s.img_id, {"img_id": s.img_id, "labelf": {}, "sentf": {}})
        entry["sentf"].setdefault(s.source, []).append(s.text)
        if s.label is not None:
            entry["labelf"].setdefault(s.source, []).append(s.label)
    for entry in entries.values():
        for source, labels in entry["labelf"].items():
            if len(labels) != len(entry["sentf"][source]):
                raise ValueError(f"{entry['img_id']}: source {source} mixes labelled and unlabelled sentences")
    return atomic_write_json(path, list(entries.values()), indent=None)
