"""The SimREC space's labels, their candidate ops and short names."""

from __future__ import annotations

from typing import Callable

from torch import nn

from search_spaces.simrec.attention import CrossAttention, GaranAttention, Identity, Refine
from search_spaces.simrec.fusion import MultiScaleFusion, SimpleFusion
from search_spaces.simrec.language import LstmSelfAttention, TransformerEncoder
from search_spaces.simrec.sizes import SimrecSizes

__all__ = ["LABELS", "OPS", "PARAMETER_FREE", "SHORT_NAMES", "make_op"]

OPS: dict[str, Callable[[SimrecSizes], nn.Module]] = {
    "lstm_sa": LstmSelfAttention,
    "transformer": TransformerEncoder,
    "simple": SimpleFusion,
    "multi_scale": MultiScaleFusion,
    "garan": GaranAttention,
    "cross": CrossAttention,
    "feed_forward": Refine,
    "identity": lambda sizes: Identity(),
}
# Label -> candidates, in network order; each label's first candidate is SimREC's default, except
# fusion, whose default (simple fusion at every scale, then the multi-scale neck) is multi_scale.
LABELS: dict[str, list[str]] = {
    "language": ["lstm_sa", "transformer"],
    "fusion": ["simple", "multi_scale"],
    "attention": ["garan", "cross"],
    "refine": ["identity", "feed_forward"],
}
PARAMETER_FREE = frozenset({"identity"})
SHORT_NAMES = {"lstm_sa": "LSTM-SA", "transformer": "TF", "simple": "SF", "multi_scale": "MSF", "garan": "GARAN",
               "cross": "X", "feed_forward": "FFN", "identity": "-"}


def make_op(name: str, sizes: SimrecSizes) -> nn.Module:
    return OPS[name](sizes)
