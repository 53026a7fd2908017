"""CLEVR-Ref+ programs as IEP-Ref's program tokens (FORMATS.md section 6).

A program (post-order nodes ``{type, inputs, value_inputs}``) becomes its prefix-order tokens
``type`` or ``type[v1,v2]`` (``filter_color[red]``), encoded as ``<START> ids <END>`` padded with
``<NULL>`` = 0 over IEP's program vocabulary: ``<NULL>``, ``<START>``, ``<END>``, ``<UNK>`` then the
tokens in sorted order. The vocabulary is built from the training split's programs, as IEP-Ref's
``preprocess_refexps.py`` builds it from its training file, so every run on the same data agrees.
A function's arity: ``scene`` 0; ``equal*``, ``union``, ``intersect``, ``less_than``,
``greater_than`` 2; every other function 1.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["NULL", "START", "END", "UNK", "SPECIALS", "arity", "encode_programs", "function_name",
           "program_vocab", "to_prefix_tokens"]

NULL, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<NULL>", "<START>", "<END>", "<UNK>")
_BINARY = ("union", "intersect", "less_than", "greater_than")


def function_name(token: str) -> str:
    """``filter_color[red]`` -> ``filter_color``."""
    return token.split("[", 1)[0]


def arity(token: str) -> int:
    """How many inputs the function of a program token takes."""
    name = function_name(token)
    if name == "scene":
        return 0
    return 2 if name.startswith("equal") or name in _BINARY else 1


def to_prefix_tokens(program: list[dict]) -> list[str]:
    """Prefix-order tokens of a post-order program (IEP-Ref's program tokens)."""
    from nas.synth.clevr_ref_iep import program_tokens  # the writer's own encoding, so files and batches agree

    return program_tokens(program)


def program_vocab(programs: Iterable[list[dict]]) -> dict[str, int]:
    """IEP's program_token_to_idx of ``programs``: the four special tokens, then the tokens sorted."""
    from nas.synth.clevr_ref_iep import build_vocab

    return build_vocab(to_prefix_tokens(p) for p in programs)


def encode_programs(programs: list[list[dict]], vocab: dict[str, int], width: int) -> np.ndarray:
    """(R, width) int64 ``<START> ids <END>`` rows padded with ``<NULL>``; unknown tokens are ``<UNK>``.
    A longer program is cut to ``width`` (its ``<END>`` lost), which only a program longer than
    every training program can be."""
    out = np.zeros((len(programs), width), np.int64)
    for row, program in enumerate(programs):
        ids = [START, *(vocab.get(t, UNK) for t in to_prefix_tokens(program)), END][:width]
        out[row, :len(ids)] = ids
    return out
