"""IEP-Ref's preprocessed files: token vocabularies and the refexp HDF5 (FORMATS.md section 6).

``preprocess_refexps.py`` tokenises an expression by putting a space before ``;`` and ``,``,
deleting ``?`` and ``.`` and splitting on spaces (case kept); every vocabulary starts with
``<NULL>``, ``<START>``, ``<END>``, ``<UNK>`` followed by the tokens in sorted order. A program
becomes its prefix-order tokens ``type`` or ``type[v1,v2]``. The HDF5 file holds ``refexps``,
``programs`` (int32, ``<START>`` ... ``<END>`` padded with ``<NULL>``), ``image_idxs``,
``orig_idxs``, ``refexp_families`` (int64) and ``answers``, the referred objects' union mask
resized to 320 x 320 as float64, grown 100 rows at a time (``maxshape=(None, 320, 320)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["ANSWER_SIZE", "SPECIAL_TOKENS", "RefexpH5Writer", "build_vocab", "encode_tokens", "iep_tokenize",
           "program_tokens", "resize_mask"]

SPECIAL_TOKENS = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
ANSWER_SIZE = 320  # IEP-Ref resizes every mask to 320 x 320
_CHUNK = 100


def iep_tokenize(text: str) -> list[str]:
    for mark in (";", ","):
        text = text.replace(mark, " " + mark)
    for mark in ("?", "."):
        text = text.replace(mark, "")
    return text.split(" ")


def program_tokens(program: list[dict]) -> list[str]:
    """Prefix-order tokens of a post-order program: a node, then its inputs' subtrees in order."""
    def token(node: dict) -> str:
        values = node.get("value_inputs") or []
        return f"{node['type']}[{','.join(values)}]" if values else node["type"]

    def prefix(index: int) -> list[str]:
        node = program[index]
        return [token(node)] + [t for child in node["inputs"] for t in prefix(child)]

    return prefix(len(program) - 1)


def build_vocab(token_lists: Iterable[list[str]]) -> dict[str, int]:
    vocab = dict(SPECIAL_TOKENS)
    for token in sorted({t for tokens in token_lists for t in tokens} - set(SPECIAL_TOKENS)):
        vocab[token] = len(vocab)
    return vocab


def encode_tokens(token_lists: list[list[str]], vocab: dict[str, int]) -> np.ndarray:
    """(R, Lmax) int32 rows ``<START> ids <END>`` padded with ``<NULL>``; unknown tokens are ``<UNK>``."""
    width = max((len(t) for t in token_lists), default=0) + 2
    out = np.zeros((len(token_lists), width), np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [vocab["<START>"], *(vocab.get(t, vocab["<UNK>"]) for t in tokens), vocab["<END>"]]
        out[row, :len(ids)] = ids
    return out


def resize_mask(mask: np.ndarray, size: int = ANSWER_SIZE) -> np.ndarray:
    """A bilinear (half-pixel centres, as cv2.resize's default) resize of a 0/1 mask to (size, size) float64."""
    out = mask.astype(np.float64)
    for axis in (0, 1):
        length = out.shape[axis]
        source = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, length - 1)
        weight = source - low
        shape = [1, 1]
        shape[axis] = size
        out = np.take(out, low, axis=axis) * (1 - weight.reshape(shape)) + \
            np.take(out, high, axis=axis) * weight.reshape(shape)
    return out


class RefexpH5Writer:
    """One split's refexp HDF5: masks are added as expressions come, the token arrays at the end."""

    def __init__(self, path: Path) -> None:
        import h5py

        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(path, "w")
        self.answers = self.file.create_dataset(
            "answers", (0, ANSWER_SIZE, ANSWER_SIZE), np.float64, maxshape=(None, ANSWER_SIZE, ANSWER_SIZE),
            chunks=(1, ANSWER_SIZE, ANSWER_SIZE), compression="gzip", compression_opts=1)
        self.pending: list[np.ndarray] = []
        self.rows = 0

    def add_mask(self, mask: np.ndarray) -> None:
        self.pending.append(resize_mask(mask))
        if len(self.pending) == _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.answers.resize(self.rows + len(self.pending), axis=0)
            self.answers[self.rows:] = np.stack(self.pending)
            self.rows += len(self.pending)
            self.pending = []

    def finish(self, refexps: np.ndarray, programs: np.ndarray, image_idxs: list[int], families: list[int]) -> None:
        self._flush()
        self.file.create_dataset("refexps", data=refexps)
        self.file.create_dataset("image_idxs", data=np.asarray(image_idxs, np.int64))
        self.file.create_dataset("orig_idxs", data=np.arange(len(image_idxs), dtype=np.int64))
        self.file.create_dataset("programs", data=programs)
        self.file.create_dataset("refexp_families", data=np.asarray(families, np.int64))
        self.file.close()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()
