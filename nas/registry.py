"""Name -> component registries for search spaces, tasks and strategies.

One small class, one instance per kind, in the style of timm and fvcore:
registering a name twice is an error, and an unknown name is an error that
lists what is available. Built-ins are imported explicitly (see
``nas.components``); third-party packages plug in through the entry-point
groups ``vlnas.search_spaces``, ``vlnas.tasks`` and ``vlnas.strategies``,
loaded the first time a lookup misses.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from nas.errors import UserError

__all__ = ["Registry", "SPACES", "TASKS", "STRATEGIES"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects of one kind."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._entry_point_group = entry_point_group
        self._entry_points_loaded = False
        self._objects: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._objects:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._objects[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._objects:
            self._load_entry_points()
        if name not in self._objects:
            available = ", ".join(sorted(self._objects)) or "none"
            raise UserError(f"unknown {self.kind} '{name}'. Available: {available}")
        return self._objects[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._objects)

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self._entry_point_group is None:
            return
        self._entry_points_loaded = True
        for entry_point in metadata.entry_points(group=self._entry_point_group):
            # Loading the module runs its @register decorators.
            entry_point.load()


SPACES: Registry = Registry("search space", "vlnas.search_spaces")
TASKS: Registry = Registry("task", "vlnas.tasks")
STRATEGIES: Registry = Registry("strategy", "vlnas.strategies")
