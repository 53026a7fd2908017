"""Batched beam search with a length penalty.

All B * K hypotheses of a step go through one ``step`` call (only the live ones); the per-item
bookkeeping is tensor operations over (B, K), with no Python loop over items.

Conventions:
  * A hypothesis' length is its generated tokens, EOS included (BOS is not counted); its score is
    ``sum_logprob / length ** length_penalty``. ``length_penalty`` 0 means the raw sum; a positive
    one favours longer captions (fairseq's ``lenpen``, not GNMT's ``((5 + len) / 6) ** a``).
  * Each step ranks an item's K * V extensions; an EOS extension among the top K ends a hypothesis
    (it is set aside) and the K best non-EOS extensions become the next beams (fairseq's rule).
  * An item stops once K hypotheses have ended (fairseq's rule: with K = 1 this is greedy decoding
    exactly, whatever the penalty), or earlier once its best ended hypothesis cannot be beaten by
    any continuation of its live beams (log-probs are <= 0, so a beam's sum can only fall; this
    early stop never changes the result).
  * Beams still live at ``max_length`` are cut there and compete with the ended ones, length
    ``max_length``, without EOS.
"""

from __future__ import annotations

import torch

from nas.decoding.common import Decoded, StepFn, accumulator_dtype, call_step, check_arguments

__all__ = ["beam_search"]


def _best_possible(scores: torch.Tensor, length: int, max_length: int, length_penalty: float) -> torch.Tensor:
    """An upper bound on the penalised score of any ending of beams whose sum is ``scores`` after
    ``length`` tokens: the sum cannot rise, and a sum <= 0 divided by ``l ** p`` is highest for the
    largest ``l ** p`` among the lengths still reachable (length + 1 .. max_length)."""
    divisor = max((length + 1) ** length_penalty, max_length ** length_penalty)
    return scores / divisor


def beam_search(step: StepFn, batch_size: int, beam_size: int, max_length: int, bos: int, eos: int, pad: int,
                length_penalty: float = 0.0, device: torch.device | str | None = None) -> Decoded:
    """The best-scoring hypothesis per item found by a beam of width ``beam_size``.

    Runs under ``torch.no_grad``. ``scores`` is the winner's penalised score (see the module
    docstring for the length convention and the stopping rule); ``log_prob`` is None.

    Args:
        step: the model, seen through the ``StepFn`` contract; rows are item ids in 0..B-1.
        batch_size: B, the number of items.
        beam_size: K, hypotheses kept per item.
        max_length: most tokens generated per item, EOS included.
        bos, eos, pad: token ids; every prefix starts with ``bos`` and ``pad`` fills after EOS.
        length_penalty: p in ``sum_logprob / length ** p``; 0 ranks by the raw sum.
        device: where the prefixes are made (the model's device); CPU when None.
    """
    check_arguments(batch_size, max_length, bos, eos, pad, beam_size)
    with torch.no_grad():
        return _search(step, batch_size, beam_size, max_length, bos, eos, pad, float(length_penalty), device)


def _search(step: StepFn, batch: int, k: int, max_length: int, bos: int, eos: int, pad: int, penalty: float,
            device: torch.device | str | None) -> Decoded:
    prefix = torch.full((batch, k, 1), bos, dtype=torch.long, device=device)  # (B, K, t)
    device = prefix.device
    items = torch.arange(batch, device=device)[:, None].expand(batch, k)  # (B, K) item id of each beam
    # Only beam 0 is live at first: K copies of the same BOS would fill the beam with duplicates.
    beam_scores: torch.Tensor | None = None  # (B, K) sums, -inf for dead beams; typed after the first step
    best_tokens = torch.full((batch, max_length), pad, dtype=torch.long, device=device)  # (B, max_length)
    best_lengths = torch.zeros(batch, dtype=torch.long, device=device)
    best_scores: torch.Tensor | None = None  # (B,) penalised, -inf until an item has an ended hypothesis
    n_ended = torch.zeros(batch, dtype=torch.long, device=device)

    for t in range(1, max_length + 1):  # t: the length of the hypotheses this step makes
        live = torch.zeros(batch, k, dtype=torch.bool, device=device) if beam_scores is None \
            else beam_scores.isfinite()
        if beam_scores is None:
            live[:, 0] = True
        step_lp = call_step(step, prefix[live], items[live], eos)  # (R, V)
        vocab = step_lp.shape[1]
        if beam_scores is None:
            dtype = accumulator_dtype(step_lp)
            beam_scores = torch.full((batch, k), float("-inf"), dtype=dtype, device=device)
            beam_scores[:, 0] = 0.0
            best_scores = torch.full((batch,), float("-inf"), dtype=dtype, device=device)
        assert best_scores is not None
        log_probs = torch.full((batch, k, vocab), float("-inf"), dtype=beam_scores.dtype, device=device)
        log_probs[live] = step_lp.to(beam_scores.dtype)
        candidates = (beam_scores[:, :, None] + log_probs).view(batch, k * vocab)  # (B, K*V)

        # A stable sort puts equal scores in token order, as greedy's argmax does.
        n_top = min(2 * k, k * vocab)  # at most K of the top 2K are EOS, so K non-EOS remain
        top_scores, top_index = candidates.sort(dim=1, descending=True, stable=True)
        top_scores, top_index = top_scores[:, :n_top], top_index[:, :n_top]  # (B, 2K)
        top_beam, top_token = top_index // vocab, top_index % vocab
        valid = top_scores.isfinite()
        is_eos = top_token == eos

        # Set aside the EOS extensions ranked among the top K; keep the best per item.
        ends = is_eos & valid & (torch.arange(n_top, device=device) < k)  # (B, 2K), EOS in the top K
        n_ended += ends.sum(dim=1)
        ended_scores = torch.where(ends, top_scores / t ** penalty, float("-inf"))
        new_best, new_rank = ended_scores.max(dim=1)  # (B,)
        _keep_better(best_tokens, best_lengths, best_scores, new_best, prefix,
                     top_beam.gather(1, new_rank[:, None]).squeeze(1), eos, t, pad)

        beam_scores, prefix = _next_beams(prefix, top_scores, top_beam, top_token, is_eos | ~valid, k)

        if t == max_length:
            # Cut the live beams: they compete without EOS, at length max_length.
            cut_scores = beam_scores / t ** penalty
            new_best, new_beam = cut_scores.max(dim=1)
            _keep_better(best_tokens, best_lengths, best_scores, new_best, prefix, new_beam, None, t, pad)
            break
        done = (n_ended >= k) | (best_scores >= _best_possible(beam_scores, t, max_length, penalty).amax(dim=1))
        beam_scores = beam_scores.masked_fill(done[:, None], float("-inf"))  # a done item calls step no more
        if not beam_scores.isfinite().any():
            break

    assert best_scores is not None
    tokens = best_tokens[:, : int(best_lengths.max())]
    return Decoded(tokens=tokens, lengths=best_lengths, scores=best_scores, log_prob=None)


def _next_beams(prefix: torch.Tensor, top_scores: torch.Tensor, top_beam: torch.Tensor, top_token: torch.Tensor,
                unusable: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K best extensions that are neither EOS nor dead, as (B, K) scores (-inf where fewer
    than K exist) and (B, K, t + 1) prefixes; the candidates come ranked best first, (B, 2K)."""
    n_top = top_scores.shape[1]
    ranks = torch.arange(n_top, device=prefix.device)[None, :]  # (1, 2K)
    # Unusable candidates sort after every usable one; the rest keep their rank order.
    pick = (unusable.long() * n_top + ranks).argsort(dim=1)[:, :k]  # (B, K)
    scores = torch.where(unusable.gather(1, pick), float("-inf"), top_scores.gather(1, pick))
    parents = top_beam.gather(1, pick)  # (B, K)
    t = prefix.shape[2]
    prefix = torch.cat([prefix.gather(1, parents[:, :, None].expand(-1, -1, t)),
                        top_token.gather(1, pick)[:, :, None]], dim=2)  # (B, K, t + 1)
    return scores, prefix


def _keep_better(best_tokens: torch.Tensor, best_lengths: torch.Tensor, best_scores: torch.Tensor,
                 new_scores: torch.Tensor, prefix: torch.Tensor, beam: torch.Tensor, eos: int | None,
                 length: int, pad: int) -> None:
    """Replace, in place, each item's best hypothesis by ``prefix[item, beam]`` (plus ``eos`` when
    given) of ``length`` generated tokens where ``new_scores`` is strictly higher (the earlier one
    wins ties)."""
    better = new_scores > best_scores  # (B,)
    if not better.any():
        return
    chosen = prefix[torch.arange(prefix.shape[0], device=prefix.device), beam]  # (B, t) with BOS
    generated = chosen[:, 1:]
    if eos is not None:
        generated = torch.cat([generated, generated.new_full((generated.shape[0], 1), eos)], dim=1)
    assert generated.shape[1] == length
    best_tokens[better] = pad  # a shorter winner must not keep an old tail
    best_tokens[better, :length] = generated[better]
    best_lengths[better] = length
    best_scores[better] = new_scores[better]
