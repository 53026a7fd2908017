"""Read a pickle that may only hold plain data, so loading it can never run code.

RefCOCO, RefCOCO+ and RefCOCOg ship their expressions as ``refs(<splitBy>).p``:
a Python-2 ``cPickle`` (protocol 2) of a list of dicts of strings, numbers and
lists (FORMATS.md section 4; read with ``pickle.load`` in
lichengunc/refer@e3bbaa30d2 ``refer.py`` and MILVLG/mmnas@552e29e666
``tools/ref_process.py``). A plain ``pickle.load`` would execute whatever a
tampered file asks for, because a pickle can name any importable callable
(``os.system``, ``builtins.eval``) and call it while loading.

``load_plain_pickle`` uses an ``Unpickler`` whose ``find_class`` refuses
*every* global. Without a global the pickle machine has no callable to
``REDUCE``, no class to ``NEWOBJ``/``INST``/``BUILD`` and no extension-registry
entry (those also go through ``find_class``), so all it can build is what has
its own opcode: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``list``, ``tuple``, ``dict`` (and the equally inert ``set``, ``frozenset``
and ``bytearray`` of protocols 4-5). Persistent ids are refused too (the base
class has no ``persistent_load``), as are out-of-band buffers (none are given).

Python-2 ``str`` objects are decoded as Latin-1 (``encoding="latin1"``), which
maps every byte to one code point and so never fails; ``unicode`` objects load
as ``str`` unchanged. A Python-2 byte string that held UTF-8 text therefore
loads as mojibake, which does not matter for the ids and splits we read.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

from nas.errors import UserError

__all__ = ["load_plain_pickle"]

# What a malformed (truncated, corrupt or non-pickle) stream can raise inside
# the unpickler; UnicodeDecodeError is a ValueError (bad BINUNICODE bytes), struct.error a cut
# fixed-size argument.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, OverflowError, MemoryError, RecursionError, struct.error)


class _PlainUnpickler(pickle._Unpickler):
    """An unpickler that can build containers and scalars, and nothing else.

    It is the pure-Python unpickler, not the C one: the C unpickler keeps its memo in an array sized
    by the largest index a ``LONG_BINPUT`` names, so a 150-byte file asking for index 680,000,000
    makes it allocate gigabytes (found by ``benchmarks/fuzz.py``); the Python one keeps a dict.
    It is about 3x slower (a 12 MB refs file: 3.5 s instead of 1 s on two busy cores), once per run.
    """

    def __init__(self, handle: BinaryIO, path: Path, what: str) -> None:
        super().__init__(handle, encoding="latin1")
        self._path = path
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        # Every way to reach a callable or a class goes through here, so
        # refusing all of them is what makes loading inert.
        raise UserError(f"{self._path}: refused to unpickle {module}.{name}: only plain lists, "
                        f"dicts, strings and numbers are allowed in {self._what}")

    def _refuse_extension(self) -> None:
        # The Python unpickler answers an extension code from a process-wide cache without asking
        # find_class when another load has filled it; refuse the opcodes outright.
        raise UserError(f"{self._path}: refused to unpickle an extension-registry object: only plain lists, "
                        f"dicts, strings and numbers are allowed in {self._what}")

    def _load_bytearray8(self) -> None:
        # The base class zero-fills bytearray(size) before reading, so a header claiming 2 GB took
        # 2 GB of memory; read first (a read stops at the end of the file), then copy what came.
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) < size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch = dict(pickle._Unpickler.dispatch)
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = _refuse_extension
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    del _opcode


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_plain_pickle(path: Path, what: str) -> Any:
    """Load ``path``, a pickle of plain data only; any failure is a one-line ``UserError``.

    Args:
        path: the pickle file (e.g. a RefCOCO ``refs(unc).p``).
        what: what the file is, for messages (e.g. ``"a RefCOCO refs file"``).
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected {what} (a pickle file)") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    with handle:
        try:
            data = _PlainUnpickler(handle, path, what).load()
        except UserError:
            raise
        except _CORRUPT as error:
            detail = _one_line(f"{type(error).__name__}: {error}")
            raise UserError(f"{path}: {what} is truncated or corrupt, not a complete pickle "
                            f"({detail})") from None
        except OSError as error:
            raise UserError(f"{path}: cannot read {what} ({error.strerror or error})") from None
        # pickle stops at its STOP opcode; bytes after it mean the file is not
        # the single pickle that cPickle.dump writes (e.g. two files joined).
        if handle.read(1):
            raise UserError(f"{path}: {what} has bytes after the end of its pickle; "
                            "expected exactly one pickled object")
    return data
