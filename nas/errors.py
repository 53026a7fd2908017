"""Errors that the CLI reports as one line, without a traceback."""

from __future__ import annotations

from typing import Any

__all__ = ["UserError", "json_type", "shown", "described"]


class UserError(Exception):
    """A mistake in what the user gave us: a bad file, key or value.

    The message must say which file, key and value were wrong, because the CLI
    prints it as a single line and exits non-zero without a traceback.
    """


_JSON_TYPES = {dict: "object", list: "list", tuple: "list", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def json_type(value: Any) -> str:
    """What a parsed value is, in the words of the file format (JSON/YAML/pickle): "list", "integer"..."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message must stay one readable line even when the
    bad value is a whole list or a 5000-digit number."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (Python's 4300-digit limit)
        text = f"<{json_type(value)} too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def described(value: Any) -> str:
    """What was found, for "expected X, got ..." messages: ``string 'abc'``, ``integer 5``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    return f"{json_type(value)} {shown(value)}"
