"""Whether the optional NNI extra is usable, checked without importing NNI at vlnas import time.

NNI is unmaintained since 3.0, so it is an optional peer (``pip install -e ".[nni]"``): the
search and the model-space adapter call ``require_nni()`` first, and a machine without it gets
one line saying what to install instead of an ImportError deep inside NNI.
"""

from __future__ import annotations

import importlib

from nas.errors import UserError

__all__ = ["require_nni", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[nni]"'


def require_nni() -> str:
    """Import NNI 3.x and the Lightning it trains with; return NNI's version or raise a one-line UserError."""
    try:
        nni = importlib.import_module("nni")
    except ImportError as error:
        raise UserError(f"strategy nni needs NNI 3.0, which is not installed ({error}); install it with "
                        f"{INSTALL_HINT}") from None
    version = str(getattr(nni, "__version__", "unknown"))
    if not version.startswith("3."):
        raise UserError(f"strategy nni needs NNI 3.x, found nni {version}; install it with {INSTALL_HINT}")
    try:
        # NNI's one-shot strategies and its Lightning evaluator import pytorch_lightning at import time.
        importlib.import_module("pytorch_lightning")
        importlib.import_module("nni.nas.evaluator.pytorch")
    except ImportError as error:
        raise UserError(f"NNI {version} cannot load its PyTorch evaluator ({error}); install the pinned "
                        f"pytorch-lightning with {INSTALL_HINT}") from None
    return version
