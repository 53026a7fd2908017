"""vlnas asks OpenMP for sleeping waits before torch loads, unless the user chose a policy."""

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
