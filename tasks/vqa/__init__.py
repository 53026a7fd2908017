"""Visual question answering on VQA v2 (and the built-in generated dataset)."""

from tasks.vqa.task import VqaConfig, VqaTask

__all__ = ["VqaTask", "VqaConfig"]
