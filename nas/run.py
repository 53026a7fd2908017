"""A run directory: its folder, log file, saved config and provenance."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

import nas
from nas.config import RunConfig, config_hash, config_to_dict
from nas.errors import UserError
from nas.io import atomic_write_text, remove_stale_temporaries

__all__ = ["make_run_dir", "run_folder", "setup_logging", "save_config", "provenance", "git_commit",
           "remove_interrupted_writes"]

log = logging.getLogger("nas")


def make_run_dir(out: str | None, command: str, task: str) -> Path:
    """``--out`` as given, else ``runs/<command>-<task>-<timestamp>``."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{command}-{task}-{stamp}"
    else:
        path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out: {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


# What a command writes before its run starts; a folder holding nothing else has no run in it.
_BEFORE_START = {"config.yaml", "log.txt"}


@contextlib.contextmanager
def run_folder(out: str | None, command: str, task: str) -> Iterator[Path]:
    """``make_run_dir`` for the body of a command. When the command is refused (a ``UserError``) before
    its run wrote anything but its config and log, what it wrote is removed again (the folder too, when
    the command made it): a bad setting leaves no run folder behind, and a fixed rerun starts clean."""
    made = out is None or not Path(out).is_dir()
    before = set() if made else {child.name for child in Path(out).iterdir()}
    path = make_run_dir(out, command, task)
    try:
        yield path
    except UserError:
        written = {child.name for child in path.iterdir()} - before
        if written <= _BEFORE_START:
            _remove_handlers(files_only=True)  # log.txt is about to go
            if made:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for name in written:
                    (path / name).unlink(missing_ok=True)
        raise


def _remove_handlers(files_only: bool = False) -> None:
    """Detach and close the handlers ``setup_logging`` added (only its log file with ``files_only``)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_vlnas", False) and (not files_only or isinstance(handler, logging.FileHandler)):
            root.removeHandler(handler)
            handler.close()


def setup_logging(run_dir: Path | None, quiet: bool = False) -> None:
    """Log to the console (INFO, or WARNING with ``quiet``) and to ``<run_dir>/log.txt``."""
    _remove_handlers()
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    handlers: list[logging.Handler] = [console]
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "log.txt")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        handler._vlnas = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def save_config(config: RunConfig, run_dir: Path) -> Path:
    return atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))


def git_commit() -> str | None:
    """The commit of the vlnas source tree, when it is a git checkout."""
    root = Path(nas.__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def provenance(config: RunConfig, **extra: Any) -> dict[str, Any]:
    record = {"seed": config.seed, "config_hash": config_hash(config), "vlnas_version": nas.__version__,
              "git_commit": git_commit(), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    record.update(extra)
    return {key: value for key, value in record.items() if value is not None}


def remove_interrupted_writes(run_dir: Path) -> None:
    """Temporary files of writes that a killed run left half-done (the real files are intact)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "results"):
        for path in remove_stale_temporaries(folder):
            log.info("removed %s, left by an interrupted write", path)
