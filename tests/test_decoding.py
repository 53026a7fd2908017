"""Batched decoding against toy models with known answers: a per-item table of next-token
log-probs indexed by the last token, small enough to search exhaustively."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nas.decoding import Decoded, beam_search, greedy_decode, sample_decode

PAD, BOS, EOS = 0, 1, 2
WORDS = (3, 4, 5)  # the tokens a hypothesis may contain besides EOS
V = 6


class TableModel:
    """``step`` = ``table[item, last token]``; checks the contract on every call and records the rows."""

    def __init__(self, log_table: torch.Tensor) -> None:
        self.table = log_table  # (B, V, V) log-probs of the next token given the last one
        self.calls: list[torch.Tensor] = []

    def __call__(self, prefix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        assert prefix.dtype == torch.long and rows.dtype == torch.long
        assert prefix.dim() == 2 and prefix.shape[0] == rows.shape[0] > 0
        assert bool((prefix[:, 0] == BOS).all())
        # A running hypothesis never holds EOS or padding.
        assert not bool(((prefix[:, 1:] == EOS) | (prefix[:, 1:] == PAD)).any())
        self.calls.append(rows.clone())
        return self.table[rows, prefix[:, -1]]  # (R, V)


def random_tables(batch: int, seed: int) -> torch.Tensor:
    """Random next-token log-probs over WORDS and EOS; PAD and BOS are never generated."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, V, V, generator=g) * 1.5
    logits[:, :, [PAD, BOS]] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def table_from_probs(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """One item's (1, V, V) log-table from {last token: {next token: prob}} (missing: prob 0)."""
    probs = torch.zeros(V, V)
    for last, nexts in rows.items():
        for token, p in nexts.items():
            probs[last, token] = p
    probs[[PAD, EOS], EOS] = 1.0  # rows a decoder must never use, kept normalised
    return probs.log()[None]


def sequence_logprob(table: torch.Tensor, item: int, seq: tuple[int, ...]) -> float:
    last, total = BOS, 0.0
    for token in seq:
        total += float(table[item, last, token])
        last = token
    return total


def exhaustive_best(table: torch.Tensor, item: int, max_length: int, penalty: float) -> tuple[tuple[int, ...], float]:
    """The best hypothesis by ``sum / length ** penalty`` among all that end in EOS or are cut."""
    best: tuple[tuple[int, ...], float] = ((), -math.inf)
    for length in range(1, max_length + 1):
        for body in itertools.product(WORDS, repeat=length - 1):
            cut = [body + (w,) for w in WORDS] if length == max_length else []
            for seq in [body + (EOS,)] + cut:
                score = sequence_logprob(table, item, seq) / length ** penalty
                if score > best[1]:
                    best = (seq, score)
    return best


def as_lists(decoded: Decoded) -> list[tuple[int, ...]]:
    return [tuple(decoded.tokens[b, : int(n)].tolist()) for b, n in enumerate(decoded.lengths)]


@pytest.mark.parametrize("penalty", [0.0, 0.7, 1.5])
def test_a_wide_beam_finds_the_exhaustive_best(penalty: float) -> None:
    table = random_tables(3, seed=1)
    # 128 beams keep every one of the 3**t running prefixes and rank every EOS ending in the top K.
    out = beam_search(TableModel(table), batch_size=3, beam_size=128, max_length=4, bos=BOS, eos=EOS, pad=PAD,
                      length_penalty=penalty)
    for item, got in enumerate(as_lists(out)):
        seq, score = exhaustive_best(table, item, 4, penalty)
        assert got == seq
        assert float(out.scores[item]) == pytest.approx(score, abs=1e-5)
        assert int(out.lengths[item]) == len(seq)


def test_the_answers_differ_across_penalties_so_the_exhaustive_test_is_not_trivial() -> None:
    table = random_tables(3, seed=1)
    answers = {p: [exhaustive_best(table, i, 4, p)[0] for i in range(3)] for p in (0.0, 0.7, 1.5)}
    assert answers[0.0] != answers[1.5]


def test_greedy_takes_the_likely_first_word_into_a_worse_ending_and_beam_avoids_it() -> None:
    # From BOS: 3 (0.6) or 4 (0.4). After 3 the caption ends with 0.3; after 4 it ends with 0.9.
    table = table_from_probs({BOS: {3: 0.6, 4: 0.4}, 3: {EOS: 0.3, 3: 0.4 - 1e-3, 4: 0.3 + 1e-3},
                              4: {EOS: 0.9, 3: 0.05, 4: 0.05}, 5: {EOS: 1.0}})
    greedy = greedy_decode(TableModel(table), 1, 5, BOS, EOS, PAD)
    beam = beam_search(TableModel(table), 1, 2, 5, BOS, EOS, PAD)
    # Greedy: 3 (0.6), then 3 (0.399) beats EOS (0.3); then 3 again ... until the cut.
    assert as_lists(greedy) == [(3, 3, 3, 3, 3)]
    assert float(greedy.scores[0]) == pytest.approx(math.log(0.6) + 4 * math.log(0.399), abs=1e-5)
    assert as_lists(beam) == [(4, EOS)]
    assert float(beam.scores[0]) == pytest.approx(math.log(0.4 * 0.9), abs=1e-6)
    assert greedy.log_prob is None and beam.log_prob is None


@pytest.mark.parametrize("penalty", [0.0, 0.5, 2.0])
def test_beam_of_one_is_greedy(penalty: float) -> None:
    for seed in range(4):
        table = random_tables(5, seed=seed)
        greedy = greedy_decode(TableModel(table), 5, 6, BOS, EOS, PAD)
        beam = beam_search(TableModel(table), 5, 1, 6, BOS, EOS, PAD, length_penalty=penalty)
        assert torch.equal(beam.tokens, greedy.tokens)
        assert torch.equal(beam.lengths, greedy.lengths)
        torch.testing.assert_close(beam.scores, greedy.scores / greedy.lengths.double() ** penalty,
                                   check_dtype=False)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_items_decoded_together_equal_items_decoded_alone(beam_size: int) -> None:
    table = random_tables(4, seed=7)
    together = beam_search(TableModel(table), 4, beam_size, 6, BOS, EOS, PAD, length_penalty=0.6)
    greedy_together = greedy_decode(TableModel(table), 4, 6, BOS, EOS, PAD)
    lengths = set()
    for item in range(4):
        alone = beam_search(TableModel(table[item : item + 1]), 1, beam_size, 6, BOS, EOS, PAD, length_penalty=0.6)
        assert as_lists(alone)[0] == as_lists(together)[item]
        assert float(alone.scores[0]) == float(together.scores[item])
        greedy_alone = greedy_decode(TableModel(table[item : item + 1]), 1, 6, BOS, EOS, PAD)
        assert as_lists(greedy_alone)[0] == as_lists(greedy_together)[item]
        lengths.add(int(together.lengths[item]))
    assert len(lengths) > 1  # items of different lengths, so the padding was exercised


def eos_tables() -> torch.Tensor:
    """Item 0 says "3 EOS"; item 1 never ends (EOS has probability 0) and loops 4 5 4 5 ..."""
    return torch.cat([table_from_probs({BOS: {3: 1.0}, 3: {EOS: 1.0}, 4: {EOS: 1.0}, 5: {EOS: 1.0}}),
                      table_from_probs({BOS: {4: 1.0}, 3: {4: 1.0}, 4: {5: 1.0}, 5: {4: 1.0}})])


@pytest.mark.parametrize("decode", ["greedy", "beam", "sample"])
def test_eos_padding_lengths_and_the_max_length_cut(decode: str) -> None:
    model = TableModel(eos_tables())
    if decode == "greedy":
        out = greedy_decode(model, 2, 4, BOS, EOS, PAD)
    elif decode == "beam":
        out = beam_search(model, 2, 3, 4, BOS, EOS, PAD)
    else:
        out = sample_decode(model, 2, 4, BOS, EOS, PAD, generator=torch.Generator().manual_seed(0))
    assert out.tokens.tolist() == [[3, EOS, PAD, PAD], [4, 5, 4, 5]]
    assert out.lengths.tolist() == [2, 4]
    assert out.tokens.dtype == torch.long and out.lengths.dtype == torch.long
    torch.testing.assert_close(out.scores, torch.zeros(2), check_dtype=False)
    # Item 0 ended at step 2: steps 3 and 4 are asked about item 1 only.
    assert [sorted(set(c.tolist())) for c in model.calls[2:]] == [[1], [1]]


def test_the_output_is_only_as_wide_as_the_longest_hypothesis() -> None:
    table = table_from_probs({BOS: {3: 1.0}, 3: {EOS: 1.0}, 4: {EOS: 1.0}, 5: {EOS: 1.0}})
    for out in (greedy_decode(TableModel(table), 1, 10, BOS, EOS, PAD),
                beam_search(TableModel(table), 1, 4, 10, BOS, EOS, PAD)):
        assert out.tokens.tolist() == [[3, EOS]] and out.lengths.tolist() == [2]


def test_the_length_penalty_switches_from_the_short_to_the_long_caption_where_the_formula_says() -> None:
    # Short: "EOS" with sum log 0.5, length 1. Long: "3 EOS" with sum log 0.4, length 2.
    table = table_from_probs({BOS: {EOS: 0.5, 3: 0.5}, 3: {EOS: 0.8, 4: 0.2}, 4: {EOS: 1.0}, 5: {EOS: 1.0}})
    short, long_ = math.log(0.5), math.log(0.4)
    crossover = math.log(long_ / short) / math.log(2)  # short / 1 == long / 2 ** p
    assert 0.3 < crossover < 0.5
    for penalty, expected, score in ((0.0, (EOS,), short), (crossover - 0.05, (EOS,), short),
                                     (crossover + 0.05, (3, EOS), long_ / 2 ** (crossover + 0.05)),
                                     (1.0, (3, EOS), long_ / 2)):
        out = beam_search(TableModel(table), 1, 2, 3, BOS, EOS, PAD, length_penalty=penalty)
        assert as_lists(out) == [expected]
        assert float(out.scores[0]) == pytest.approx(score, abs=1e-6)


def test_the_early_stop_waits_for_a_long_winner_the_penalty_favours() -> None:
    # "EOS" (0.6) ends first, but "3 4 5 EOS" (0.4 * 0.99 ** 3) wins at penalty 0.5 and length 4:
    # a stop bound that only looked one token ahead would end the search after step 1.
    table = table_from_probs({BOS: {EOS: 0.6, 3: 0.4}, 3: {4: 0.99, EOS: 0.01}, 4: {5: 0.99, EOS: 0.01},
                              5: {EOS: 0.99, 3: 0.01}})
    out = beam_search(TableModel(table), 1, 4, 5, BOS, EOS, PAD, length_penalty=0.5)
    seq, score = exhaustive_best(table, 0, 5, 0.5)
    assert seq == (3, 4, 5, EOS) and as_lists(out) == [seq]
    assert float(out.scores[0]) == pytest.approx(score, abs=1e-6)


def test_equal_log_probs_go_to_the_lower_token_in_greedy_and_in_a_beam_of_one() -> None:
    table = table_from_probs({BOS: {4: 0.4, 5: 0.4, EOS: 0.2}, 4: {EOS: 1.0}, 5: {EOS: 1.0}, 3: {EOS: 1.0}})
    for out in (greedy_decode(TableModel(table), 1, 3, BOS, EOS, PAD),
                beam_search(TableModel(table), 1, 1, 3, BOS, EOS, PAD)):
        assert as_lists(out) == [(4, EOS)]


def sample_table() -> torch.Tensor:
    return table_from_probs({BOS: {EOS: 0.2, 3: 0.5, 4: 0.3}, 3: {EOS: 0.5, 3: 0.1, 4: 0.4},
                             4: {EOS: 0.3, 3: 0.6, 4: 0.1}, 5: {EOS: 1.0}})


def chi_square(counts: dict[tuple[int, ...], int], probs: dict[tuple[int, ...], float], n: int) -> float:
    return sum((counts.get(seq, 0) - n * p) ** 2 / (n * p) for seq, p in probs.items())


def test_sampled_sequences_follow_the_model_distribution() -> None:
    table, n, max_length = sample_table(), 6000, 3
    truth: dict[tuple[int, ...], float] = {}
    for length in range(1, max_length + 1):
        for body in itertools.product((3, 4), repeat=length - 1):
            endings = [body + (EOS,)] + ([body + (w,) for w in (3, 4)] if length == max_length else [])
            for seq in endings:
                truth[seq] = math.exp(sequence_logprob(table, 0, seq))
    assert sum(truth.values()) == pytest.approx(1.0)
    out = sample_decode(TableModel(table.expand(n, V, V)), n, max_length, BOS, EOS, PAD,
                        generator=torch.Generator().manual_seed(3))
    counts: dict[tuple[int, ...], int] = {}
    for seq in as_lists(out):
        counts[seq] = counts.get(seq, 0) + 1
    assert set(counts) <= set(truth)
    # 15 sequences, 14 degrees of freedom: 36.1 is the 0.999 quantile of chi-square(14).
    assert chi_square(counts, truth, n) < 36.1
    # The same test rejects a plausible wrong model: the distribution with the first step flattened.
    flat = {seq: p / math.exp(sequence_logprob(table, 0, seq[:1])) / 3 for seq, p in truth.items()}
    assert chi_square(counts, flat, n) > 200
    # Each sample's score is its own log-probability.
    expected = torch.tensor([sequence_logprob(table, 0, seq) for seq in as_lists(out)])
    torch.testing.assert_close(out.scores, expected, check_dtype=False)


def test_sample_log_prob_is_the_chosen_tokens_log_probs_and_carries_their_gradient() -> None:
    logits = torch.nn.Parameter(torch.randn(3, V, V, generator=torch.Generator().manual_seed(4)))
    mask = torch.zeros(V)
    mask[[PAD, BOS]] = float("-inf")

    def step(prefix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[rows, prefix[:, -1]] + mask, dim=-1)

    out = sample_decode(step, 3, 5, BOS, EOS, PAD, generator=torch.Generator().manual_seed(0))
    assert out.log_prob is not None and out.log_prob.requires_grad
    assert not out.scores.requires_grad
    weights = torch.tensor([1.0, -2.0, 0.5])
    (grad,) = torch.autograd.grad((out.log_prob * weights).sum(), logits)

    # Teacher forcing the drawn tokens through the same model gives the same value and gradient.
    forced = []
    for item, seq in enumerate(as_lists(out)):
        lasts = torch.tensor((BOS,) + seq[:-1])
        lp = torch.log_softmax(logits[item, lasts] + mask, dim=-1)  # (n, V)
        forced.append(lp.gather(1, torch.tensor(seq)[:, None]).sum())
    forced_sum = torch.stack(forced)
    torch.testing.assert_close(out.log_prob.detach(), forced_sum.detach())
    (forced_grad,) = torch.autograd.grad((forced_sum * weights).sum(), logits)
    torch.testing.assert_close(grad, forced_grad)
    assert float(grad.abs().sum()) > 0


def test_sampling_uses_the_generator_when_given_and_the_global_rng_otherwise() -> None:
    table = random_tables(1, seed=2).expand(64, V, V)

    def draw(generator: torch.Generator | None = None) -> torch.Tensor:
        return sample_decode(TableModel(table), 64, 6, BOS, EOS, PAD, generator=generator).tokens

    torch.manual_seed(11)
    first = draw()
    torch.manual_seed(11)
    assert torch.equal(draw(), first)
    assert not torch.equal(draw(), first)  # the global RNG moved on
    state = torch.get_rng_state()
    a = draw(torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # a given generator leaves the global RNG alone
    assert torch.equal(draw(torch.Generator().manual_seed(5)), a)


def test_bad_arguments_and_a_bad_step_output_are_refused() -> None:
    model = TableModel(random_tables(1, seed=0))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, 1, 0, 4, BOS, EOS, PAD)
    with pytest.raises(ValueError, match="max_length"):
        greedy_decode(model, 1, 0, BOS, EOS, PAD)
    with pytest.raises(ValueError, match="eos and pad"):
        greedy_decode(model, 1, 4, BOS, EOS, EOS)
    with pytest.raises(ValueError, match=r"\(R, V\)"):
        greedy_decode(lambda prefix, rows: torch.zeros(V), 1, 4, BOS, EOS, PAD)
    with pytest.raises(ValueError, match="vocabulary"):
        beam_search(lambda prefix, rows: torch.zeros(len(rows), 2), 1, 2, 4, BOS, EOS, PAD)
