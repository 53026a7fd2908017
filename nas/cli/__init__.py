"""The ``nas`` command line."""
