"""Errors that the CLI reports as one line, without a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user gave us: a bad file, key or value.

    The message must say which file, key and value were wrong, because the CLI
    prints it as a single line and exits non-zero without a traceback.
    """
