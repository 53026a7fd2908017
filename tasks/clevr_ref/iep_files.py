"""IEP-Ref's preprocessed expressions: ``{split}_refexps.h5`` and ``vocab.json`` (FORMATS.md section 6).

The ``clevr_ref`` task trains from the JSON files; these readers check the HDF5 layout that the
module-network space (a program generator and an execution engine) reads: ``refexps`` and
``programs`` (R, L) integer token ids, ``image_idxs``, ``orig_idxs``, ``refexp_families`` (R,) and
``answers`` (R, 320, 320) masks; and a vocabulary with ``refexp_token_to_idx`` and
``program_token_to_idx`` that start ``<NULL>``, ``<START>``, ``<END>``, ``<UNK>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.errors import UserError, described
from nas.io import read_json
from tasks.clevr_ref.features import open_hdf5

__all__ = ["ANSWER_SIZE", "read_iep_refexps", "read_iep_vocab"]

ANSWER_SIZE = 320
_TOKEN_ARRAYS = ("refexps", "programs")
_INDEX_ARRAYS = ("image_idxs", "orig_idxs", "refexp_families")
_SPECIALS = ("<NULL>", "<START>", "<END>", "<UNK>")


def read_iep_refexps(path: str | Path, with_answers: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an IEP-Ref refexp HDF5 file (``answers`` only when asked: 0.8 MB per row)."""
    path = Path(path)
    with open_hdf5(path, "refexp HDF5 file") as handle:
        names = ", ".join(handle.keys()) or "none"
        out: dict[str, np.ndarray] = {}
        rows = None
        for name, ndim in [*((n, 2) for n in _TOKEN_ARRAYS), *((n, 1) for n in _INDEX_ARRAYS), ("answers", 3)]:
            if name not in handle:
                raise UserError(f"{path}: no dataset '{name}' (found {names})")
            data = handle[name]
            if not hasattr(data, "shape") or data.ndim != ndim:
                shape = getattr(data, "shape", "a group")
                raise UserError(f"{path}: '{name}' should have {ndim} axes, got {shape}")
            if name != "answers" and data.dtype.kind not in "iu":
                raise UserError(f"{path}: '{name}' should hold integers, got {data.dtype}")
            if rows is None:
                rows = data.shape[0]
            elif data.shape[0] != rows:
                raise UserError(f"{path}: '{name}' has {data.shape[0]} rows, 'refexps' has {rows}")
            if name == "answers":
                if data.shape[1:] != (ANSWER_SIZE, ANSWER_SIZE):
                    raise UserError(f"{path}: 'answers' should be (R, {ANSWER_SIZE}, {ANSWER_SIZE}) masks, "
                                    f"got {data.shape}")
                if with_answers:
                    out[name] = np.asarray(data[:], np.float64)
            else:
                out[name] = np.asarray(data[:], np.int64)
        return out


def read_iep_vocab(path: str | Path) -> dict[str, dict[str, int] | None]:
    """IEP-Ref's vocab.json, each token vocabulary checked to start with the four special tokens."""
    path = Path(path)
    vocab = read_json(path, "IEP vocabulary")
    if not isinstance(vocab, dict):
        raise UserError(f"{path}: expected an object of vocabularies, got {described(vocab)}")
    for key in ("refexp_token_to_idx", "program_token_to_idx"):
        tokens = vocab.get(key)
        if not isinstance(tokens, dict):
            raise UserError(f"{path}: '{key}' should be an object of token -> id, got {described(tokens)}")
        for index, special in enumerate(_SPECIALS):
            if tokens.get(special) != index:
                raise UserError(f"{path}: {key}['{special}'] should be {index}, got {described(tokens.get(special))}")
        if sorted(tokens.values()) != list(range(len(tokens))):
            raise UserError(f"{path}: {key} ids should be 0..{len(tokens) - 1}, each once")
    return vocab
