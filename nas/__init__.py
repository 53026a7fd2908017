"""vlnas: neural architecture search for vision-language models."""

import os

# OpenMP threads that spin while waiting (the runtime's default here) make every small torch
# operation wait for a core that another process holds: on two shared cores a 7200x32 @ 32x32
# matrix product took 30 ms instead of 0.3 ms. Sleeping waits cost microseconds when the machine
# is idle. The runtime reads this once, when torch loads, so it is set before anything imports
# torch; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
