"""Process-wide settings vlnas applies on import: OpenMP wait policy and malloc reuse."""

from __future__ import annotations

import os
import subprocess
import sys

SHOW = "import nas, torch; import os; print(os.environ['OMP_WAIT_POLICY'])"


def run(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_passive_waits_by_default_and_the_users_choice_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert run(env) == "PASSIVE"
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_freed_memory_is_reused_on_glibc_unless_the_user_opts_out() -> None:
    show = "import nas.runtime as r; print(r.keep_freed_memory())"
    env = {k: v for k, v in os.environ.items() if k != "VLNAS_MALLOC"}
    out = lambda e: subprocess.run([sys.executable, "-c", show], env=e, capture_output=True,  # noqa: E731
                                   text=True, check=True).stdout.strip()
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    assert out(env) == str(glibc)
    assert out({**env, "VLNAS_MALLOC": "system"}) == "False"
