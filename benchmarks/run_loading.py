"""A trained run directory's config, task, prepared data and model, for the benchmark scripts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import nas.strategies  # noqa: F401  (registrations: a saved config names its strategy)
import search_spaces  # noqa: F401
import tasks  # noqa: F401
from nas.checkpoint import load_checkpoint
from nas.config import resolve_config, yaml_layer
from nas.registry import SPACES, TASKS
from nas.space import fixed_block_factory


def load_run(run: Path, data_dir: str | None = None, checkpoint: str = "last",
             **task_overrides: Any) -> tuple[Any, Any, Any, torch.nn.Module]:
    """(config, task, prepared train and eval splits, model with ``checkpoints/<checkpoint>.pt``) of a
    ``nas retrain`` / ``nas pretrain`` run directory; ``data_dir`` and ``task_overrides`` go over its
    saved task settings."""
    config = resolve_config([yaml_layer(run / "config.yaml")])
    overrides = {**task_overrides, **({"data_dir": data_dir} if data_dir else {})}
    # The run's vocab.json and answer_dict.json are reused, so token and answer ids are the checkpoint's.
    task = TASKS.get(config.task.name)(replace(config.task, **overrides), run, progress=False)
    data = task.prepare([config.task.train_split, config.task.eval_split])
    space = SPACES.get(config.space.name)(config.space)
    state = load_checkpoint(run / "checkpoints" / f"{checkpoint}.pt")
    model = space.build_model(data.meta, task.build_head(config.space.hidden, data.meta),
                              fixed_block_factory(state["genotype"]["choices"]))
    model.load_state_dict(state["model"])
    return config, task, data, model
