"""Text tokenisation (spaCy's blank English tokenizer), token vocabularies and word vectors, for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from nas.errors import UserError, json_type, shown
from nas.io import atomic_write_json, read_json

__all__ = ["Tokenizer", "build_vocab", "load_or_build_vocab", "check_vocab", "encode", "load_word_vectors",
           "word_vector_tensor", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = {"PAD": 0, "UNK": 1, "CLS": 2}


class Tokenizer:
    """Lower-cased spaCy tokens without punctuation; needs no model download."""

    def __init__(self) -> None:
        import spacy  # imported lazily: spaCy takes ~1 s to import

        self._nlp = spacy.blank("en")

    def __call__(self, texts: Iterable[str]) -> list[list[str]]:
        docs = self._nlp.tokenizer.pipe(text.lower() for text in texts)
        return [[t.text for t in doc if not (t.is_punct or t.is_space)] for doc in docs]


def build_vocab(token_lists: Iterable[list[str]]) -> dict[str, int]:
    """Tokens in first-seen order after PAD, UNK and CLS (MCAN's convention)."""
    vocab = dict(SPECIAL_TOKENS)
    for tokens in token_lists:
        for token in tokens:
            if token not in vocab:
                vocab[token] = len(vocab)
    return vocab


def load_or_build_vocab(path: Path, token_lists: Iterable[list[str]]) -> dict[str, int]:
    """Reuse the run's saved vocabulary, so token ids never change within a run."""
    if path.is_file():
        vocab = read_json(path, "token vocabulary")
        check_vocab(vocab, path)
        return vocab
    vocab = build_vocab(token_lists)
    atomic_write_json(path, vocab, indent=None)
    return vocab


def check_vocab(vocab: Any, path: Path) -> None:
    """A saved vocabulary must be what ``build_vocab`` writes: tokens -> ids 0..N-1, each id once, with
    PAD, UNK and CLS first. Any other id would index past the embedding or merge two tokens."""
    if not isinstance(vocab, dict):
        raise UserError(f"{path}: a token vocabulary must be a JSON object of token -> id, got {json_type(vocab)}")
    for token, index in SPECIAL_TOKENS.items():
        if vocab.get(token) != index:
            raise UserError(f"{path}: token {token} must have id {index}, got {shown(vocab.get(token))}")
    bad = next(((t, i) for t, i in vocab.items() if type(i) is not int or not 0 <= i < len(vocab)), None)
    if bad is not None:
        raise UserError(f"{path}: token {shown(bad[0])} has id {shown(bad[1])}; ids must be integers "
                        f"0..{len(vocab) - 1}")
    if len(set(vocab.values())) < len(vocab):
        seen: dict[int, str] = {}
        for token, index in vocab.items():
            if index in seen:
                raise UserError(f"{path}: tokens {shown(seen[index])} and {shown(token)} share id {index}")
            seen[index] = token


def encode(token_lists: list[list[str]], vocab: dict[str, int], max_tokens: int) -> np.ndarray:
    """(Q, max_tokens) int64 ids, truncated and zero-padded."""
    ids = np.zeros((len(token_lists), max_tokens), np.int64)
    unknown = vocab["UNK"]
    for row, tokens in enumerate(token_lists):
        clipped = tokens[:max_tokens]
        ids[row, : len(clipped)] = [vocab.get(token, unknown) for token in clipped]
    return ids


def load_word_vectors(source: str, vocab: dict[str, int]) -> np.ndarray:
    """A (V, d) matrix for ``vocab`` from a GloVe text file or an installed spaCy package.

    Words without a vector get zeros, as spaCy's ``en_vectors_web_lg`` gives MCAN.
    """
    path = Path(source)
    if path.is_file():
        return _glove_vectors(path, vocab)
    try:
        import spacy

        nlp = spacy.load(source)
    except OSError:
        raise UserError(f"task.word_vectors: '{source}' is neither a GloVe text file nor an installed "
                        "spaCy package with vectors") from None
    if nlp.vocab.vectors.shape[0] == 0:
        raise UserError(f"task.word_vectors: spaCy package '{source}' has no word vectors")
    matrix = np.zeros((len(vocab), nlp.vocab.vectors.shape[1]), np.float32)
    for token, index in vocab.items():
        if token not in SPECIAL_TOKENS and nlp.vocab.has_vector(token):
            matrix[index] = nlp.vocab.get_vector(token)
    return matrix


def word_vector_tensor(source: str | None, vocab: dict[str, int]) -> torch.Tensor | None:
    """``task.word_vectors`` as the embedding's initial weights, or None when not configured."""
    if not source:
        return None
    return torch.from_numpy(load_word_vectors(source, vocab))


def _glove_vectors(path: Path, vocab: dict[str, int]) -> np.ndarray:
    try:
        return _read_glove(path, vocab)
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: word-vector file is not UTF-8 text (bad byte at offset {error.start})") from None


def _read_glove(path: Path, vocab: dict[str, int]) -> np.ndarray:
    matrix = None
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            word, *values = line.rstrip().split(" ")
            if matrix is None:
                if not values:
                    raise UserError(f"{path}: line {number} has a word and no vector; expected GloVe's "
                                    "'word v1 v2 ...' lines")
                matrix = np.zeros((len(vocab), len(values)), np.float32)
            if len(values) != matrix.shape[1]:
                raise UserError(f"{path}: line {number} has {len(values)} values, expected {matrix.shape[1]}")
            if word in vocab:
                try:
                    matrix[vocab[word]] = np.asarray(values, np.float32)
                except ValueError:
                    raise UserError(f"{path}: line {number} has a value that is not a number") from None
    if matrix is None:
        raise UserError(f"{path}: word-vector file is empty")
    return matrix
