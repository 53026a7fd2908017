"""Any registered search space as an NNI 3.0 model space: one ``LayerChoice`` per labelled choice.

The space builds its network from a block factory (``nas.space``); here the factory wraps each
label's candidate op modules, keyed by op name, in ``nni.nas.nn.pytorch.LayerChoice(label=label)``.
So NNI sees exactly ``space.choices()``, its one-shot strategies swap each LayerChoice for their
own mixed layer, and ``freeze({label: op})`` keeps the chosen op modules with their weights.

This module imports NNI; vlnas imports it only when NNI is asked for (``nas.interop.nni_env``).
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from typing import Mapping

import torch
from torch import nn

from nas.interop.nni_env import require_nni
from nas.space import MakeOp, SearchSpace
from nas.task import TaskMeta

require_nni()
with warnings.catch_warnings():
    # NNI 3.0 wraps every class in torch.nn at import time and warns about newer non-module ones
    # (e.g. torch.nn.Buffer); nothing of ours uses them.
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
    from nni.mutable import label_scope
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace

__all__ = ["NniModelSpace", "layer_choice_block", "frozen_network"]


def layer_choice_block(label: str, candidates: list[str], make: MakeOp) -> nn.Module:
    """Block factory: every candidate of ``label`` in one LayerChoice, keyed by op name."""
    *scopes, name = label.split("/")
    ops = {op: make(op) for op in candidates}
    with ExitStack() as stack:
        # NNI refuses '/' in a label name and builds 'enc/0' as the name '0' inside the scope 'enc'.
        for scope in scopes:
            stack.enter_context(label_scope(scope))
        choice = LayerChoice(ops, label=name)
    assert choice.label == label, f"NNI labelled block {label!r} as {choice.label!r}"
    # Spaces read this at construction to decide what to compute for the blocks (mmnas builds its
    # shared box-geometry embedding only when some decoder block may run relation attention).
    choice.needs_relation = any(getattr(op, "needs_relation", False) for op in choice)
    return choice


class NniModelSpace(ModelSpace):
    """A search space's network, built with a LayerChoice at every label.

    Args:
        space: the registered search space (its config fixes width and depth).
        meta: sizes the task's data determined (vocabulary, features, outputs).
        head: the task's output head.

    ``forward(batch)`` runs the wrapped network on one of our batch dicts; an unmutated space only
    runs each LayerChoice's first candidate with one argument, so run it through a strategy or
    ``freeze`` it first. ``network`` of a frozen space is our child network (same module tree and
    state-dict keys as ``space.build_model(meta, head, fixed_block_factory(choices))``).
    """

    def __init__(self, space: SearchSpace, meta: TaskMeta, head: nn.Module) -> None:
        super().__init__()
        self.network = space.build_model(meta, head, layer_choice_block)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.network(batch)


def frozen_network(model_space: NniModelSpace, sample: Mapping[str, str]) -> nn.Module:
    """The child network of ``sample`` ({label: op name}), sharing the chosen ops' weights.

    NNI's ``freeze`` copies the modules around the chosen ops and keeps the chosen op modules
    themselves, so after a one-shot search this is the child with the supernet's weights.
    """
    return model_space.freeze(dict(sample)).network
