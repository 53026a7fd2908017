"""Checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.errors import UserError
from nas.io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "check_weights"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Save ``state`` (tensors, numbers, strings, lists, dicts only) via a temporary file."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


# What torch.load can raise on a damaged or foreign file: its zip reader, its legacy-format reader and
# the weights-only unpickler each fail in their own way on bytes they did not expect.
_UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, IndexError, ValueError, TypeError,
               AttributeError, OverflowError, MemoryError, RecursionError)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    require: tuple[str, ...] = (), mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint without running pickled code (``weights_only=True``).

    Args:
        path: the ``.pt`` file.
        map_location: where tensors go.
        require: top-level keys the caller reads; a checkpoint without one is a one-line error.
        mmap: map the file instead of reading it, for a caller that reads only a few small entries.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(error))  # two torch wordings
        if unsafe:
            raise UserError(f"{path}: refused to load checkpoint: it would run or build '{unsafe.group(1)}', "
                            "and vlnas loads only tensors and plain containers") from None
        raise UserError(f"{path}: not a readable checkpoint (truncated or not made by torch.save)") from None
    except _UNREADABLE as error:
        detail = (str(error).splitlines() or [""])[0][:200] or "the file ends early"
        raise UserError(f"{path}: not a readable checkpoint ({type(error).__name__}: {detail})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a vlnas checkpoint (top level is {type(state).__name__})")
    missing = [key for key in require if key not in state]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this kind of run: no key(s) {', '.join(missing)} "
                        f"(found {', '.join(map(str, list(state)[:8])) or 'none'})")
    return state


def check_weights(model: nn.Module, weights: Any, source: str | Path) -> None:
    """Refuse, in one line, saved weights that do not fit ``model`` (another width, depth, vocabulary or
    genotype), naming the first parameter that differs; torch's own error lists every key on many lines."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{source}: its 'model' must map parameter names to tensors")
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [str(key) for key in weights if key not in expected]
    if missing or unexpected:
        parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise UserError(f"{source}: its weights do not fit this model: parameter names {'; '.join(parts)}")
    for key, tensor in expected.items():
        if weights[key].shape != tensor.shape:
            raise UserError(f"{source}: its weights do not fit this model: {key} is {tuple(weights[key].shape)} "
                            f"there and {tuple(tensor.shape)} here (another width, depth or vocabulary?)")
