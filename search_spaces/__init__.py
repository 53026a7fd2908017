"""Built-in search spaces, imported explicitly so their registrations run."""

from search_spaces import mmnas  # noqa: F401
from search_spaces import lxmert  # noqa: F401
from search_spaces import simrec  # noqa: F401
from search_spaces import modules  # noqa: F401
from search_spaces import unified  # noqa: F401
