"""The unified (VLP) search space: one stack, a bidirectional and a sequence-to-sequence mask."""

from search_spaces.unified.space import UnifiedConfig, UnifiedSpace

__all__ = ["UnifiedConfig", "UnifiedSpace"]
