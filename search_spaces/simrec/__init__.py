"""The SimREC one-stage grounding search space (language encoder, fusion, attention, refinement)."""

from search_spaces.simrec.space import SimrecConfig, SimrecSpace

__all__ = ["SimrecSpace", "SimrecConfig"]
