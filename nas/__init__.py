"""vlnas: neural architecture search for vision-language models."""

from nas.runtime import keep_freed_memory, prefer_sleeping_openmp_waits

prefer_sleeping_openmp_waits()  # before anything imports torch
keep_freed_memory()

__version__ = "0.1.0"
