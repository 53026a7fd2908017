"""vlnas: neural architecture search for vision-language models."""

__version__ = "0.1.0"
