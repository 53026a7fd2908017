"""Built-in tasks, imported explicitly so their registrations run."""

from tasks import vqa  # noqa: F401
