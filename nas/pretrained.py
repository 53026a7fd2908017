"""Start a retrain from a pre-trained checkpoint of the same genotype (``train.init``).

The checkpoint is a ``nas pretrain`` run's, or any other retrain's of the same genotype and space
settings: a GQA retrain starts an NLVR2 one, as LXMERT's QA pre-training precedes its NLVR2
fine-tuning (``benchmarks/README.md``: lxr955 on the built-in NLVR2 data).

The embedding and backbone weights are copied. Of the head, only the pooling layers that the
heads share by name (``head.text_pool``, ``head.image_pool``, ``head.norm``: MCAN's AttFlat
pooling and the fused vector's norm) are copied, where both heads have them in the same shape:
they are what LXMERT's pooled output is to its fine-tuning heads, which start from it. When both
runs answer from a vocabulary (``answer_dict.json``), the answer classifier's rows are copied by
answer string too, as LXMERT's ``--loadLXMERTQA`` starts VQA and GQA from its pre-trained QA
head; other output layers are always the new task's own.
Each task builds its own token vocabulary, so word-embedding rows are copied by token string:
a word in both vocabularies gets its pre-trained row, a word only the new task has keeps its
initial one. The vocabularies are the ``vocab.json`` of the two run directories (the
checkpoint's is ``<run>/checkpoints/<name>.pt``, as ``nas submit`` finds it).
A network that is not embedding + backbone + head names what is copied in ``init_prefixes`` (the
``modules`` space: its program generator and execution engine), and a space's Config may name
settings that change no weight in ``weightless_keys`` (its training stage), so one stage's
checkpoint starts the next.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.answer_dict import read_answer_dict
from nas.checkpoint import load_checkpoint
from nas.config import RunConfig, config_to_dict
from nas.errors import UserError, shown
from nas.genotype import Genotype
from nas.io import read_json
from nas.text import check_vocab

__all__ = ["InitReport", "init_from_checkpoint", "TRANSFERRED"]

log = logging.getLogger("nas.pretrained")
TRANSFERRED = ("embedding.", "backbone.")  # parameter-name prefixes copied, every one required
POOLER = ("head.text_pool.", "head.image_pool.", "head.norm.")  # copied where name and shape agree
CLASSIFIER = ("head.classifier.weight", "head.classifier.bias")  # answer rows, matched by answer string
_WEIGHTLESS_SPACE_KEYS = {"dropout"}  # space settings that do not change any weight


@dataclass
class InitReport:
    tensors: int  # tensors copied (embedding and backbone)
    pooler: int  # head pooling tensors copied
    answers_copied: int  # rows of this run's answer vocabulary found in the checkpoint's (0: none copied)
    answers: int  # size of this run's answer vocabulary (0: it has none)
    words_copied: int  # rows of this run's vocabulary found in the checkpoint's
    words: int  # size of this run's vocabulary


def init_from_checkpoint(model: nn.Module, path: str | Path, genotype: Genotype, config: RunConfig,
                         run_dir: Path) -> InitReport:
    """Copy ``path``'s embedding and backbone weights into ``model`` (a fresh retrain's network)."""
    path = Path(path)
    state = load_checkpoint(path, require=("model", "genotype", "config"))
    _check_same_network(path, state, genotype, config)
    saved = state["model"]
    own = model.state_dict()
    prefixes = tuple(getattr(model, "init_prefixes", TRANSFERRED))
    # Word tables (padding row 0) are matched row by row through the two vocabularies; position and
    # segment tables are plain tensors, copied whole.
    embeddings = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)
                  and module.padding_idx == 0 and name.startswith(prefixes)}
    keys = [key for key in own if key.startswith(prefixes)]
    missing = [key for key in keys if key not in saved]
    if missing:
        raise UserError(f"{path}: has no weights for {len(missing)} parameter(s) of this network "
                        f"(e.g. {', '.join(missing[:3])})")
    rows, words = _row_map(path, run_dir) if embeddings else (None, 0)
    copied = 0
    with torch.no_grad():
        for key in keys:
            source, target = saved[key], own[key]
            if key in embeddings:
                here, there = rows
                if there.numel() and int(there.max()) >= source.shape[0] or source.shape[1:] != target.shape[1:]:
                    raise UserError(f"{path}: {key} is {tuple(source.shape)} there and {tuple(target.shape)} here, "
                                    "which its vocabulary does not explain")
                target[here.to(target.device)] = source[there].to(target.device, target.dtype)
            elif source.shape != target.shape:
                raise UserError(f"{path}: its weights do not fit this network: {key} is {tuple(source.shape)} there "
                                f"and {tuple(target.shape)} here (another feature size or word-vector size?)")
            else:
                target.copy_(source)
            copied += 1
        pooler = [key for key in own if key.startswith(POOLER) and key in saved and saved[key].shape == own[key].shape]
        for key in pooler:
            own[key].copy_(saved[key])
        answers, total_answers = _answer_rows(path, run_dir)
        answers_copied = 0
        if answers is not None and all(k in own and k in saved for k in CLASSIFIER) and \
                own[CLASSIFIER[0]].shape[1:] == saved[CLASSIFIER[0]].shape[1:]:
            here, there = answers
            if len(there) and int(there.max()) < saved[CLASSIFIER[0]].shape[0] and \
                    int(here.max()) < own[CLASSIFIER[0]].shape[0]:
                for key in CLASSIFIER:
                    own[key][here.to(own[key].device)] = saved[key][there].to(own[key].device, own[key].dtype)
                answers_copied = len(here)
    report = InitReport(copied, len(pooler), answers_copied, total_answers,
                        len(rows[0]) if rows is not None else 0, words)
    parts = "embedding and backbone" if prefixes == TRANSFERRED else "/".join(p.rstrip(".") for p in prefixes)
    log.info("train.init: %d %s tensors and %d head pooling tensors from %s; word rows by "
             "token: %d of %d (%.1f%%) of this run's vocabulary", report.tensors, parts, report.pooler, path,
             report.words_copied, report.words,
             100.0 * report.words_copied / max(report.words, 1))
    if report.answers and all(key in own for key in CLASSIFIER):
        log.info("train.init: answer classifier rows by answer: %d of %d (%.1f%%) of this run's answers",
                 report.answers_copied, report.answers, 100.0 * report.answers_copied / report.answers)
    return report


def _check_same_network(path: Path, state: dict[str, Any], genotype: Genotype, config: RunConfig) -> None:
    theirs = state["genotype"]
    if not isinstance(theirs, dict) or not isinstance(theirs.get("choices"), dict):
        raise UserError(f"{path}: its 'genotype' is not a genotype, got {shown(theirs)}")
    if theirs.get("space") != genotype.space:
        raise UserError(f"{path}: pre-trained in search space '{theirs.get('space')}', this run uses "
                        f"'{genotype.space}'")
    labels = sorted(set(theirs["choices"]) | set(genotype.choices))
    differs = [label for label in labels if theirs["choices"].get(label) != genotype.choices.get(label)]
    if differs:
        label = differs[0]
        raise UserError(f"{path}: pre-trained with another genotype ({len(differs)} label(s) differ, e.g. {label}: "
                        f"{theirs['choices'].get(label)} there, {genotype.choices.get(label)} here)")
    saved_space = (state["config"] or {}).get("space") if isinstance(state["config"], dict) else None
    if not isinstance(saved_space, dict):
        raise UserError(f"{path}: its 'config' has no space section")
    space = config_to_dict(config)["space"]
    # A key the checkpoint lacks was added to the space after it was saved, so it had the default.
    saved_space = {**dataclasses.asdict(type(config.space)()), **saved_space}
    weightless = _WEIGHTLESS_SPACE_KEYS | set(getattr(config.space, "weightless_keys", ()))
    for key in sorted(set(saved_space) | set(space)):
        if key not in weightless and saved_space.get(key) != space.get(key):
            raise UserError(f"{path}: pre-trained with space.{key}={shown(saved_space.get(key))}, this run has "
                            f"space.{key}={shown(space.get(key))}; the weights only fit the same space settings")


def _row_map(path: Path, run_dir: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """(rows here, rows there) of the tokens both vocabularies hold, and this run's vocabulary size."""
    theirs_path = path.resolve().parent.parent / "vocab.json"
    if not theirs_path.is_file():
        raise UserError(f"{path}: its run directory {theirs_path.parent} has no vocab.json; start from a checkpoint "
                        "inside the run directory that 'nas pretrain' wrote")
    ours_path = run_dir / "vocab.json"
    if not ours_path.is_file():
        raise UserError(f"{ours_path}: this run's task wrote no token vocabulary, so word rows cannot be matched")
    theirs, ours = read_json(theirs_path, "token vocabulary"), read_json(ours_path, "token vocabulary")
    check_vocab(theirs, theirs_path)
    check_vocab(ours, ours_path)
    return _shared_rows(ours, theirs), len(ours)


def _answer_rows(path: Path, run_dir: Path) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, int]:
    """(rows here, rows there) of the answers both runs' answer vocabularies hold (None when either
    has none), and the size of this run's answer vocabulary (0: none)."""
    theirs_path, ours_path = path.resolve().parent.parent / "answer_dict.json", run_dir / "answer_dict.json"
    if not (theirs_path.is_file() and ours_path.is_file()):
        return None, 0
    ours, theirs = read_answer_dict(ours_path), read_answer_dict(theirs_path)
    rows = _shared_rows({a: i for i, a in enumerate(ours)}, {a: i for i, a in enumerate(theirs)})
    return rows, len(ours)


def _shared_rows(ours: dict[str, int], theirs: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows here, rows there) of the strings (tokens, answers) both row maps hold."""
    shared = [(index, theirs[key]) for key, index in ours.items() if key in theirs]
    return (torch.tensor([h for h, _ in shared], dtype=torch.long),
            torch.tensor([t for _, t in shared], dtype=torch.long))
