"""Crash-safe file writes: write a temporary sibling, then rename over the target.

A reader therefore sees either the old file or the complete new one, never a
half-written file, even if the process dies mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["FILE_MODE", "DIR_MODE", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_write_jsonl", "read_json",
           "remove_stale_temporaries"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp and mkdtemp make their results 0o600 and 0o700; renamed into place, those would be
# unreadable to the user's group on a shared cluster, unlike what the user's other tools write.
# These are the modes open() and mkdir() would give. The umask is read once: it can only be
# read by setting it, which is not safe while other threads create files.
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically (with the usual permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.chmod(tmp_path, FILE_MODE)
        _fsync(tmp_path)  # the bytes reach the disk before the name points at them
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # and the rename itself survives a power cut
    return path


def _fsync(path: Path) -> None:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is still atomic
    finally:
        os.close(handle)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a killed ``atomic_write`` left in ``folder``.

    Only files named like ours (``.<target>.<random>.tmp``) go; the targets themselves were never
    touched, so nothing of value is lost.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_write_jsonl(path: str | Path, records: list[Any]) -> Path:
    """Rewrite a JSON-lines log whole, so it always matches the checkpointed history."""
    return atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, turning a missing or malformed file into a one-line UserError."""
    from nas.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:  # e.g. "[[[[..." deeper than Python's recursion limit
        raise UserError(f"{path}: {what} is nested too deeply to parse") from None
    except ValueError as error:  # json's own int() refuses numbers of more than 4300 digits
        raise UserError(f"{path}: {what} holds a value JSON cannot read ({str(error).split(';')[0]})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror or error})") from None
