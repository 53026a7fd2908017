"""What every decoder shares: the step-function contract, the result type and argument checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["StepFn", "Decoded", "accumulator_dtype", "call_step", "check_arguments"]

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``step(prefix, rows) -> log_probs``.

``prefix`` is (R, t) int64, the tokens so far of R hypotheses, each starting with BOS (t >= 1);
``rows`` is (R,) int64, the batch item (image) each hypothesis belongs to, in 0..B-1. The result is
(R, V) float log-probabilities of the next token. The decoders only ever pass hypotheses that are
still running, so R shrinks as items finish and a model must not assume R == B or R == B * K.
"""


@dataclass
class Decoded:
    """The decoded sequences of a batch.

    Attributes:
        tokens: (B, L) int64 generated tokens without BOS, EOS included when it was generated and
            ``pad`` after it; L is the longest length in the batch.
        lengths: (B,) int64 generated tokens per item, EOS included. An item that reached
            ``max_length`` without EOS has length ``max_length`` and no EOS.
        scores: (B,) float. Greedy and sampling: the sum of the chosen tokens' log-probs up to and
            including EOS. Beam search: that sum divided by ``length ** length_penalty``.
        log_prob: (B,) float carrying autograd, sampling only (the same sum as ``scores``); None
            for greedy and beam search, which run without gradients.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    log_prob: torch.Tensor | None = None


def check_arguments(batch_size: int, max_length: int, bos: int, eos: int, pad: int,
                    beam_size: int = 1) -> None:
    """Reject sizes and token ids a decoder cannot work with (programming errors, not user data)."""
    for name, value, least in (("batch_size", batch_size, 1), ("max_length", max_length, 1),
                               ("beam_size", beam_size, 1), ("bos", bos, 0), ("eos", eos, 0), ("pad", pad, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"decoding: {name} must be an integer >= {least}, got {value!r}")
    if eos == pad:
        # A generated EOS would be indistinguishable from the padding after it.
        raise ValueError(f"decoding: eos and pad must differ, both are {eos}")


def call_step(step: StepFn, prefix: torch.Tensor, rows: torch.Tensor, eos: int) -> torch.Tensor:
    """``step(prefix, rows)`` with its output checked: (R, V) float, with EOS inside the vocabulary."""
    log_probs = step(prefix, rows)
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2 or log_probs.shape[0] != prefix.shape[0]:
        shape = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        raise ValueError(f"decoding: the step function must return (R, V) log-probs for R={prefix.shape[0]} "
                         f"hypotheses, got {shape}")
    if not log_probs.is_floating_point():
        raise ValueError(f"decoding: the step function must return float log-probs, got {log_probs.dtype}")
    if log_probs.shape[1] <= eos:
        raise ValueError(f"decoding: eos={eos} is outside the step function's vocabulary of {log_probs.shape[1]}")
    return log_probs


def accumulator_dtype(log_probs: torch.Tensor) -> torch.dtype:
    """Sum log-probs in at least float32: a half-precision model's sums over 20 tokens lose digits."""
    return torch.promote_types(log_probs.dtype, torch.float32)
