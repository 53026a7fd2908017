"""Built-in search strategies, imported explicitly so their registrations run."""

from nas.strategies import darts, gdas, mmnas, spos  # noqa: F401
from nas.strategies import optuna_strategy  # noqa: F401  (multi-trial; see nas.multitrial)
from nas.strategies import ray_strategy  # noqa: F401  (the Ray Tune sweep; see nas.tune)
from nas.strategies import nni_strategy  # noqa: F401  (NNI's one-shot strategies; see nas.interop.nni_search)
