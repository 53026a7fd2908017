"""The caption task's word vocabulary: captions and questions share one table.

Both are tokenised with ``tokenize_caption`` (the metrics' PTB-style tokeniser), so a generated
caption is already in the form the metrics score. Ids 0..4 are the special tokens the unified
model needs; a word seen fewer than ``min_count`` times in the training captions and questions
becomes UNK (Karpathy's COCO preprocessing uses 5).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from nas.errors import UserError
from nas.io import atomic_write_json, read_json
from nas.text import check_vocab

__all__ = ["SpecialTokens", "SPECIAL", "build_caption_vocab", "load_or_build_caption_vocab", "encode_captions",
           "encode_questions", "decode_caption"]


@dataclass(frozen=True)
class SpecialTokens:
    pad: int = 0
    unk: int = 1
    bos: int = 2  # BERT's [CLS] starts every caption
    eos: int = 3  # [SEP] ends it
    mask: int = 4  # hides a word in masked-LM batches
    first_word: int = 5  # ids below are special


SPECIAL = SpecialTokens()
_NAMES = {"PAD": SPECIAL.pad, "UNK": SPECIAL.unk, "CLS": SPECIAL.bos, "SEP": SPECIAL.eos, "MASK": SPECIAL.mask}


def build_caption_vocab(token_lists: Iterable[list[str]], min_count: int) -> dict[str, int]:
    """Special tokens, then words by descending count (ties alphabetical), so ids are reproducible."""
    counts = Counter(word for tokens in token_lists for word in tokens)
    words = sorted((w for w, n in counts.items() if n >= min_count and w not in _NAMES), key=lambda w: (-counts[w], w))
    return {**_NAMES, **{word: SPECIAL.first_word + k for k, word in enumerate(words)}}


def load_or_build_caption_vocab(path: Path, token_lists: Iterable[list[str]], min_count: int) -> dict[str, int]:
    """The run's saved vocabulary (so ids never change within a run), else a new one saved there."""
    if path.is_file():
        vocab = read_json(path, "caption vocabulary")
        check_vocab(vocab, path)
        wrong = next((name for name, index in _NAMES.items() if vocab.get(name) != index), None)
        if wrong is not None:
            raise UserError(f"{path}: token {wrong} must have id {_NAMES[wrong]} in a caption vocabulary, got "
                            f"{vocab.get(wrong)!r} (a vocabulary of another task?)")
        return vocab
    vocab = build_caption_vocab(token_lists, min_count)
    atomic_write_json(path, vocab, indent=None)
    return vocab


def encode_captions(token_lists: list[list[str]], vocab: dict[str, int], max_words: int) -> np.ndarray:
    """(C, max_words + 2) ids: BOS, the first ``max_words`` words, EOS, then padding."""
    return _encode(token_lists, vocab, max_words, [SPECIAL.eos])


def encode_questions(token_lists: list[list[str]], vocab: dict[str, int], max_words: int) -> np.ndarray:
    """(Q, max_words + 1) ids: BOS (the position VQA's pooling can read as [CLS]), words, padding."""
    return _encode(token_lists, vocab, max_words, [])


def _encode(token_lists: list[list[str]], vocab: dict[str, int], max_words: int, end: list[int]) -> np.ndarray:
    ids = np.full((len(token_lists), max_words + 1 + len(end)), SPECIAL.pad, np.int64)
    for row, tokens in enumerate(token_lists):
        sequence = [SPECIAL.bos, *(vocab.get(word, SPECIAL.unk) for word in tokens[:max_words]), *end]
        ids[row, : len(sequence)] = sequence
    return ids


def decode_caption(ids: Iterable[int], words: list[str]) -> str:
    """Generated ids (no BOS) up to the first EOS or padding, as a space-joined caption."""
    out = []
    for token in ids:
        token = int(token)
        if token in (SPECIAL.eos, SPECIAL.pad):
            break
        if token >= SPECIAL.first_word:
            out.append(words[token])
        elif token == SPECIAL.unk:
            out.append("UNK")
    return " ".join(out)
