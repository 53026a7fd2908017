"""Process-wide settings that make CPU training faster, applied when ``nas`` is imported.

Both are opt-out: an ``OMP_WAIT_POLICY`` the user exported wins, and ``VLNAS_MALLOC=system``
leaves the C allocator as it was.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["prefer_sleeping_openmp_waits", "keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def prefer_sleeping_openmp_waits() -> None:
    """Ask OpenMP for sleeping waits; must run before torch loads (the runtime reads it once).

    OpenMP threads that spin while waiting (the runtime's default here) make every small torch
    operation wait for a core that another process holds: on two shared cores a 7200x32 @ 32x32
    matrix product took 30 ms instead of 0.3 ms. Sleeping waits cost microseconds when the
    machine is idle.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed activation buffers instead of returning them to the kernel.

    glibc serves every block over 32 MiB with its own ``mmap`` and unmaps it on free, so each
    training step faults in its large activations page by page again: 12-15 s of system time
    in an 80 s benchmark run at MmNas's shape. With ``mmap`` and trimming off, freed blocks are
    reused and the process keeps its peak memory, as PyTorch's caching allocator does on GPUs
    (a threshold of 1 GiB still let most of a step's activations go back to the kernel).
    Returns whether the setting was applied (glibc on Linux only).
    """
    if os.environ.get("VLNAS_MALLOC", "reuse") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim
