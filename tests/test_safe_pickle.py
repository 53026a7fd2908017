"""Tests for nas.safe_pickle: plain data loads, nothing in a pickle can run.

The accepted shape is that of RefCOCO's ``refs(unc).p`` (a Python-2 cPickle,
protocol 2, of plain dicts; FORMATS.md section 4, lichengunc/refer@e3bbaa30d2
``refer.py``). Each hostile pickle is first shown to run its payload under a
plain ``pickle.loads`` (control), then shown to run nothing here.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from nas.errors import UserError
from nas.safe_pickle import load_plain_pickle

WHAT = "a RefCOCO refs file"

# A Python-2 cPickle protocol-2 stream, written opcode by opcode as Python 2
# emits it: byte strings are SHORT_BINSTRING ('U'), which Python 3 can only
# decode with an encoding. b"caf\xe9" is Latin-1 for "café".
PY2_REFS = (
    b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x03valq\x03U\x06ann_idq\x04J\x0e:\x1a\x00"
    b"U\x03rawq\x05U\x04caf\xe9q\x06U\tsentencesq\x07]q\x08}q\t(U\x07sent_idq\nK\x07"
    b"U\x06tokensq\x0b]q\x0cU\x04leftq\raua"
    b"ua."
)


class SystemPayload:
    """Unpickling this would call ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalPayload:
    """Unpickling this would call ``builtins.eval(source)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _system_pickle(marker: Path) -> bytes:
    # Buried inside refs-like data: the loader must refuse it wherever it is.
    payload = SystemPayload(f"touch '{marker}'")
    return pickle.dumps([{"split": "val", "sentences": [{"sent_id": 1, "raw": payload}]}], protocol=2)


def _eval_pickle(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps({"x": EvalPayload(f"open({str(marker)!r}, 'w').close()")}, protocol=protocol)


# --------------------------------------------------------------------------
# Plain data
# --------------------------------------------------------------------------

def test_python2_protocol2_refs_load_with_latin1_strings(tmp_path: Path) -> None:
    refs = load_plain_pickle(_write(tmp_path / "refs(unc).p", PY2_REFS), WHAT)
    assert refs == [{"split": "val", "ann_id": 1718798, "raw": "café",
                     "sentences": [{"sent_id": 7, "tokens": ["left"]}]}]


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_containers_round_trip_every_protocol(tmp_path: Path, protocol: int) -> None:
    # Only types with their own opcodes: none of them needs a global.
    data = {"refs": [{"ref_id": 0, "split": "testA", "score": 0.25, "ok": True, "none": None,
                      "big": 2 ** 70, "pair": (1, "a"), "sentences": [{"sent_id": 3}]}]}
    path = _write(tmp_path / "refs.p", pickle.dumps(data, protocol=protocol))
    assert load_plain_pickle(path, WHAT) == data


def test_python3_bytes_at_protocol_2_need_a_global_and_are_refused(tmp_path: Path) -> None:
    # Python 3 pickles bytes for protocol < 3 via _codecs.encode; it is a
    # global like any other, so it is refused (real refs files hold no bytes).
    path = _write(tmp_path / "refs.p", pickle.dumps([b"raw"], protocol=2))
    with pytest.raises(UserError, match=r"refused to unpickle _codecs\.encode"):
        load_plain_pickle(path, WHAT)


# --------------------------------------------------------------------------
# Hostile pickles run nothing
# --------------------------------------------------------------------------

def test_control_plain_pickle_really_runs_the_payloads(tmp_path: Path) -> None:
    # Proves the payloads below are live: plain pickle executes both.
    system_marker, eval_marker = tmp_path / "SYSTEM_RAN", tmp_path / "EVAL_RAN"
    pickle.loads(_system_pickle(system_marker))
    pickle.loads(_eval_pickle(eval_marker))
    assert system_marker.exists() and eval_marker.exists()


def test_os_system_payload_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path / "refs(unc).p", _system_pickle(marker))
    with pytest.raises(UserError) as caught:
        load_plain_pickle(path, WHAT)
    message = str(caught.value)
    assert message == (f"{path}: refused to unpickle {os.system.__module__}.system: only plain lists, "
                       f"dicts, strings and numbers are allowed in {WHAT}")
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol, module", [(2, "__builtin__"), (4, "builtins")])
def test_builtins_eval_payload_is_refused_and_runs_nothing(tmp_path: Path, protocol: int,
                                                           module: str) -> None:
    # Protocols < 3 write Python 2 module names (fix_imports); the message
    # names the global as the file spells it.
    marker = tmp_path / "MARKER"
    path = _write(tmp_path / "refs.p", _eval_pickle(marker, protocol))
    with pytest.raises(UserError, match=rf"refs\.p: refused to unpickle {module}\.eval:"):
        load_plain_pickle(path, WHAT)
    assert not marker.exists()


def test_protocol_0_inst_opcode_is_refused(tmp_path: Path) -> None:
    # INST ('i') names its class as text and calls it; it goes through find_class too.
    marker = tmp_path / "MARKER"
    data = f"(S'touch {marker}'\nios\nsystem\n.".encode()
    path = _write(tmp_path / "refs.p", data)
    with pytest.raises(UserError, match=r"refused to unpickle os\.system"):
        load_plain_pickle(path, WHAT)
    assert not marker.exists()


def test_harmless_looking_globals_are_refused_too(tmp_path: Path) -> None:
    # No allow-list: even a set written by Python 2 (__builtin__.set) is refused.
    path = _write(tmp_path / "refs.p", b"\x80\x02c__builtin__\nset\nq\x00]q\x01K\x01a\x85q\x02Rq\x03.")
    with pytest.raises(UserError, match=r"refused to unpickle __builtin__\.set"):
        load_plain_pickle(path, WHAT)


def test_persistent_id_is_refused(tmp_path: Path) -> None:
    # BINPERSID with a string pid; the base Unpickler has no persistent_load.
    path = _write(tmp_path / "refs.p", b"\x80\x02X\x03\x00\x00\x00pidQ.")
    with pytest.raises(UserError, match=r"refs\.p: a RefCOCO refs file is truncated or corrupt"):
        load_plain_pickle(path, WHAT)


# --------------------------------------------------------------------------
# Broken files: one line, naming the file
# --------------------------------------------------------------------------

@pytest.mark.parametrize("data, label", [
    (PY2_REFS[:-7], "truncated"),
    (b"", "empty"),
    (b"this is not a pickle at all", "garbage"),
    (b"\x80\x09]q\x00.", "unknown protocol"),
    (b"\x80\x02X\xff\xff\xff\x7fab", "length beyond the end"),
    (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "invalid UTF-8 in a unicode string"),
    (b"\x80\x02h\x05.", "memo key never stored"),
])
def test_corrupt_files_give_one_line_naming_the_file(tmp_path: Path, data: bytes, label: str) -> None:
    path = _write(tmp_path / "refs(unc).p", data)
    with pytest.raises(UserError) as caught:
        load_plain_pickle(path, WHAT)
    message = str(caught.value)
    assert message.startswith(f"{path}: {WHAT} is truncated or corrupt"), label
    assert "\n" not in message


def test_bytes_after_the_pickle_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "refs.p", pickle.dumps([1], protocol=2) + pickle.dumps([2], protocol=2))
    with pytest.raises(UserError, match=r"refs\.p: a RefCOCO refs file has bytes after the end"):
        load_plain_pickle(path, WHAT)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "refs(unc).p"
    with pytest.raises(UserError) as caught:
        load_plain_pickle(missing, WHAT)
    assert str(caught.value) == f"{missing}: {WHAT} not found"
    with pytest.raises(UserError, match=r"is a directory, expected a RefCOCO refs file"):
        load_plain_pickle(tmp_path, WHAT)


def test_accepts_a_string_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "refs.p", pickle.dumps({"a": [1, 2.5]}, protocol=2))
    assert load_plain_pickle(str(path), WHAT) == {"a": [1, 2.5]}
