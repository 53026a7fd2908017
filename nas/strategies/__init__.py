"""Built-in search strategies, imported explicitly so their registrations run."""

from nas.strategies import mmnas  # noqa: F401
