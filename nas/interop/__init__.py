"""Bridges to other NAS libraries (NNI). Each bridge imports its library only when it is used,
so vlnas itself never needs them: see ``nas.interop.nni_env.require_nni``."""
