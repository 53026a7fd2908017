import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.checkpoint import load_checkpoint, save_checkpoint
from nas.errors import UserError
from nas.io import atomic_write, atomic_write_json, read_json
from nas.text import load_word_vectors


def test_a_crash_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "genotype.json", {"version": 1})

    def crash(tmp: Path) -> None:
        tmp.write_text('{"version": ')  # half a file, then the process "dies"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]  # no temporary left behind


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_the_permissions_a_plain_write_gets(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # 0o666 less the umask
    written = atomic_write_json(tmp_path / "genotype.json", {"version": 1})
    checkpoint = tmp_path / "last.pt"
    save_checkpoint({"step": torch.tensor(1)}, checkpoint)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(checkpoint.stat().st_mode) == expected
    assert expected & stat.S_IRGRP  # mkstemp's own mode (0o600) would fail this under the usual umask 022


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_feature_cache_folder_gets_the_mode_mkdir_gives(tmp_path: Path) -> None:
    from nas.features import write_cache

    (tmp_path / "plain").mkdir()
    rows = [(7, np.ones((2, 3), np.float32), np.zeros((2, 4), np.float32), 10, 20)]
    write_cache(tmp_path / "cache" / "one", rows, 1, 3, 2, progress=False)
    assert stat.S_IMODE((tmp_path / "cache" / "one").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_checkpoints_round_trip_and_refuse_pickled_code(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "history": [{"loss": 0.5}]}
    path = save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))

    class Payload:  # anything beyond tensors and containers must not be unpickled
        def __reduce__(self):
            return (print, ("pwned",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"model": Payload()}, hostile)
    with pytest.raises(UserError, match="hostile.pt: refused to load checkpoint"):
        load_checkpoint(hostile)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(pickle.dumps({"a": 1})[:5])
    with pytest.raises(UserError, match="broken.pt: not a readable checkpoint"):
        load_checkpoint(broken)


def test_glove_vectors_fill_the_vocabulary(tmp_path: Path) -> None:
    glove = tmp_path / "glove.txt"
    glove.write_text("what 0.5 1.0 -1.0\ncolor 2 3 4\nunused 9 9 9\n")
    vocab = {"PAD": 0, "UNK": 1, "CLS": 2, "what": 3, "color": 4, "cube": 5}
    matrix = load_word_vectors(str(glove), vocab)
    assert matrix.shape == (6, 3)
    np.testing.assert_allclose(matrix[3], [0.5, 1.0, -1.0])
    np.testing.assert_allclose(matrix[4], [2, 3, 4])
    assert not matrix[[0, 1, 2, 5]].any()  # no vector -> zeros
    glove.write_text("what 0.5 1.0\ncolor 2 3 4\n")
    with pytest.raises(UserError, match="glove.txt: line 2 has 3 values, expected 2"):
        load_word_vectors(str(glove), vocab)
    with pytest.raises(UserError, match="neither a GloVe text file nor an installed spaCy package"):
        load_word_vectors("no_such_vectors_package", vocab)
