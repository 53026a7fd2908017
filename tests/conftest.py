"""Shared fixtures: an isolated cache and the tiny built-in dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import nas.strategies  # noqa: F401  (registrations)
import search_spaces  # noqa: F401
import tasks  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep generated data and feature caches out of the user's ~/.cache."""
    path = tmp_path_factory.mktemp("vlnas-cache")
    previous = os.environ.get("VLNAS_CACHE")
    os.environ["VLNAS_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("VLNAS_CACHE", None)
    else:
        os.environ["VLNAS_CACHE"] = previous


@pytest.fixture
def one_thread() -> None:
    """Tiny models on a shared 2-core machine: more threads only contend (10x slower backward passes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_vqa_dir(isolated_cache: Path) -> Path:
    """The tiny built-in VQA dataset, written in the released formats."""
    from nas.synth import SynthVqaConfig, generate_vqa
    from tasks.vqa.task import SYNTH_SIZES

    root = isolated_cache / "tiny-vqa"
    generate_vqa(root, SynthVqaConfig(seed=0, **SYNTH_SIZES["tiny"]), progress=False)
    return root
