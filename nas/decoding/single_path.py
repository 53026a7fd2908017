"""Greedy and sampled decoding: one hypothesis per batch item, extended one token at a time."""

from __future__ import annotations

from typing import Callable

import torch

from nas.decoding.common import Decoded, StepFn, accumulator_dtype, call_step, check_arguments

__all__ = ["greedy_decode", "sample_decode"]

ChooseFn = Callable[[torch.Tensor], torch.Tensor]  # (R, V) log-probs -> (R,) int64 chosen tokens


def _decode_one_path(step: StepFn, choose: ChooseFn, batch_size: int, max_length: int, bos: int, eos: int,
                     pad: int, device: torch.device | str | None) -> Decoded:
    """The loop greedy and sampling share; ``choose`` picks each running row's next token.

    Only running items are passed to ``step``, so a finished item costs nothing more.
    """
    check_arguments(batch_size, max_length, bos, eos, pad)
    prefix = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)  # (B, t), BOS first
    lengths = torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    running = torch.ones(batch_size, dtype=torch.bool, device=device)
    log_prob: torch.Tensor | None = None
    for t in range(max_length):
        rows = running.nonzero().squeeze(1)  # (R,)
        log_probs = call_step(step, prefix[rows], rows, eos)  # (R, V)
        chosen = choose(log_probs)  # (R,)
        chosen_lp = log_probs.gather(1, chosen[:, None]).squeeze(1)  # (R,)
        if log_prob is None:
            log_prob = torch.zeros(batch_size, dtype=accumulator_dtype(log_probs), device=prefix.device)
        # Out of place, so the sum keeps its autograd history through every step.
        log_prob = log_prob.index_add(0, rows, chosen_lp.to(log_prob.dtype))
        column = torch.full((batch_size,), pad, dtype=torch.long, device=prefix.device)
        column[rows] = chosen
        prefix = torch.cat([prefix, column[:, None]], dim=1)  # (B, t + 1)
        ended = rows[chosen == eos]
        lengths[ended] = t + 1
        running[ended] = False
        if not running.any():
            break
    assert log_prob is not None  # max_length >= 1, so the loop ran
    tokens = prefix[:, 1:]  # (B, L), the generated part
    tokens = tokens[:, : int(lengths.max())]
    return Decoded(tokens=tokens, lengths=lengths, scores=log_prob.detach(), log_prob=log_prob)


def greedy_decode(step: StepFn, batch_size: int, max_length: int, bos: int, eos: int, pad: int,
                  device: torch.device | str | None = None) -> Decoded:
    """The most likely next token at every step (the first of equal ones), until EOS or ``max_length``.

    Runs under ``torch.no_grad``. ``scores`` is each item's sum of chosen log-probs, EOS included;
    ``log_prob`` is None.

    Args:
        step: the model, seen through the ``StepFn`` contract.
        batch_size: B, the number of items; ``step`` gets item ids in 0..B-1.
        max_length: most tokens generated per item, EOS included; a longer one is cut without EOS.
        bos, eos, pad: token ids; every prefix starts with ``bos`` and ``pad`` fills after EOS.
        device: where the prefixes are made (the model's device); CPU when None.
    """
    with torch.no_grad():
        decoded = _decode_one_path(step, lambda lp: lp.argmax(dim=1), batch_size, max_length, bos, eos, pad,
                                   device)
    decoded.log_prob = None
    return decoded


def sample_decode(step: StepFn, batch_size: int, max_length: int, bos: int, eos: int, pad: int,
                  generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Decoded:
    """One sequence per item drawn from the model's own distribution, token by token.

    ``log_prob`` (B,) is the sum of the drawn tokens' log-probs up to and including EOS and keeps
    its autograd graph, so self-critical training can backpropagate through it; ``scores`` is the
    same sum detached. Draws use ``generator`` when given, else torch's global RNG. The arguments
    are those of ``greedy_decode``.
    """

    def draw(log_probs: torch.Tensor) -> torch.Tensor:
        # exp of a log_softmax sums to 1 up to rounding; multinomial normalises the rest away.
        probs = log_probs.detach().float().exp()  # (R, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode_one_path(step, draw, batch_size, max_length, bos, eos, pad, device)
