"""The MmNas encoder-decoder search space."""

from search_spaces.mmnas.space import MmnasConfig, MmnasSpace

__all__ = ["MmnasSpace", "MmnasConfig"]
