"""IEP-Ref's module networks: a program generator and an execution engine with a searched module cell."""

from search_spaces.modules.space import ModulesConfig, ModulesSpace

__all__ = ["ModulesSpace", "ModulesConfig"]
