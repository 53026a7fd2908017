"""clevr_ref batches carry IEP-Ref's program tokens: they round-trip with the refexps' programs,
and only the first ``task.num_programs`` training programs are marked usable."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.errors import UserError
from tasks.clevr_ref.programs import END, NULL, START, arity, encode_programs, program_vocab, to_prefix_tokens
from tasks.clevr_ref.task import ClevrRefConfig, ClevrRefTask

PROGRAM = [{"type": "scene", "inputs": [], "value_inputs": []},
           {"type": "filter_color", "inputs": [0], "value_inputs": ["red"]},
           {"type": "scene", "inputs": [], "value_inputs": []},
           {"type": "filter_shape", "inputs": [2], "value_inputs": ["cube"]},
           {"type": "intersect", "inputs": [1, 3], "value_inputs": [], "_output": [0]}]


def test_prefix_tokens_vocab_and_arity() -> None:
    assert to_prefix_tokens(PROGRAM) == ["intersect", "filter_color[red]", "scene", "filter_shape[cube]", "scene"]
    vocab = program_vocab([PROGRAM])
    assert list(vocab) == ["<NULL>", "<START>", "<END>", "<UNK>", "filter_color[red]", "filter_shape[cube]",
                           "intersect", "scene"]
    assert encode_programs([PROGRAM], vocab, 9).tolist() == [[START, 6, 4, 7, 5, 7, END, NULL, NULL]]
    assert [arity(t) for t in ("scene", "filter_color[red]", "equal_color", "union", "less_than", "relate[left]",
                               "unique", "same_shape")] == [0, 1, 2, 2, 2, 1, 1, 1]


def test_batches_round_trip_the_refexps_programs(tmp_path: Path) -> None:
    task = ClevrRefTask(ClevrRefConfig(synth_size="tiny", cache_dir=str(tmp_path / "cache"), num_programs=7),
                        tmp_path, progress=False)
    data = task.prepare(["train", "val"])
    vocab = data.meta.program_vocab
    names = {index: token for token, index in vocab.items()}
    assert list(vocab)[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"] and list(vocab)[4:] == sorted(vocab)[4:]
    longest = max(len(to_prefix_tokens(r.program)) for r in data.splits["train"].refexps)
    assert data.meta.program_length == longest + 2
    for split in ("train", "val"):
        dataset = data.splits[split]
        batch = dataset.__getitems__(list(range(len(dataset))))
        assert batch["program"].shape[0] == len(dataset) and batch["program"].dtype.is_floating_point is False
        for row, refexp in zip(batch["program"].tolist(), dataset.refexps):
            ids = row[:row.index(END) + 1]
            assert ids[0] == START and set(row[len(ids):]) <= {NULL}
            decoded = [names[i] for i in ids[1:-1]]
            expected = to_prefix_tokens(refexp.program)
            if split == "train":  # the vocabulary is the training programs'
                assert decoded == expected
            else:
                assert [t for t, e in zip(decoded, expected) if t != "<UNK>"] == \
                    [e for t, e in zip(decoded, expected) if t != "<UNK>"] and len(decoded) == len(expected)
        known = batch["program_known"].tolist()
        assert known == ([True] * 7 + [False] * (len(dataset) - 7) if split == "train" else [True] * len(dataset))


def test_a_negative_program_count_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"task\.num_programs=-1"):
        ClevrRefTask(ClevrRefConfig(synth_size="tiny", num_programs=-1), tmp_path, progress=False)
