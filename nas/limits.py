"""Refuse work that would run out of disk or memory before it starts, with the estimate."""

from __future__ import annotations

import shutil
from pathlib import Path

from nas.errors import UserError

__all__ = ["check_free_space", "check_free_memory", "available_memory", "format_size"]

MARGIN = 1.05  # estimates leave out small bookkeeping


def format_size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse when ``folder``'s filesystem cannot hold ``needed`` bytes."""
    free = shutil.disk_usage(folder).free
    if needed * MARGIN > free:
        raise UserError(f"{folder}: {what} needs about {format_size(needed)} but only {format_size(free)} is free "
                        "there; free some space or point $VLNAS_CACHE (task.cache_dir) elsewhere")


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_free_memory(needed: int, what: str, hint: str) -> None:
    """Refuse when ``needed`` bytes exceed the memory available now (unchecked where unknown)."""
    free = available_memory()
    if free is not None and needed * MARGIN > free:
        raise UserError(f"{what} needs about {format_size(needed)} of memory but only {format_size(free)} is "
                        f"available; {hint}")
