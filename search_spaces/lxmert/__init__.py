"""The LXMERT cross-modality encoder search space."""

from search_spaces.lxmert.space import LxmertConfig, LxmertSpace

__all__ = ["LxmertSpace", "LxmertConfig"]
