"""The LXMERT search space: language, object and cross-modality layers, one op per sublayer.

Tan & Bansal, "LXMERT: Learning Cross-Modality Encoder Representations from Transformers",
EMNLP 2019 (https://arxiv.org/abs/1908.07490); layers as in airsplay/lxmert ``src/lxrt/modeling.py``.
Labels, in network order (i counts layers of that kind from 0):

- ``lang/{i}/self`` in {self_att, identity}, ``lang/{i}/ffn`` in {feed_forward, identity}:
  the language layers (a BERT layer when neither is identity);
- ``obj/{i}/self`` in {self_att, rel_self_att, identity}, ``obj/{i}/ffn`` in {feed_forward, identity}:
  the object-relationship layers;
- ``cross/{i}/lang_cross`` and ``cross/{i}/obj_cross`` in {cross_att, identity}: the language stream
  attends to the objects and the objects to the language, both reading the layer's inputs; with
  ``share_cross_attention`` (LXMERT's ``visual_attention``) both directions hold ONE module;
- ``cross/{i}/lang_self`` in {self_att, identity}, ``cross/{i}/obj_self`` in {self_att, rel_self_att,
  identity}, then ``cross/{i}/lang_ffn`` and ``cross/{i}/obj_ffn`` in {feed_forward, identity}.

A stream's depth is searched through ``identity`` (declared parameter-free, so the one-shot
strategies' ``strategy.max_parameter_free`` caps how many sublayers a genotype skips). The
reference architecture is LXMERT's own, lxr955: 9 language, 5 object and 5 cross layers, nothing
skipped and no relation attention (``genotypes/lxr955.json``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from nas.errors import UserError
from nas.model import VisionLanguageModel
from nas.registry import SPACES
from nas.space import BlockFactory, SearchSpace, run_length
from nas.task import TaskMeta
from search_spaces.lxmert.backbone import CROSS_SLOTS, SINGLE_STREAM_SLOTS, LxmertEncoder
from search_spaces.lxmert.embedding import LxmertEmbedding
from search_spaces.lxmert.ops import (CROSS_OPS, FFN_OPS, LANG_SELF_OPS, OBJ_SELF_OPS, PARAMETER_FREE,
                                      SHORT_NAMES, OpSizes, make_op)
from search_spaces.mmnas.space import MAX_BLOCKS, NORMS

__all__ = ["LxmertSpace", "LxmertConfig"]

_CANDIDATES = {"lang": {"self": LANG_SELF_OPS, "ffn": FFN_OPS},
               "obj": {"self": OBJ_SELF_OPS, "ffn": FFN_OPS},
               "cross": {"lang_cross": CROSS_OPS, "obj_cross": CROSS_OPS, "lang_self": LANG_SELF_OPS,
                         "obj_self": OBJ_SELF_OPS, "lang_ffn": FFN_OPS, "obj_ffn": FFN_OPS}}
_SLOTS = {"lang": SINGLE_STREAM_SLOTS, "obj": SINGLE_STREAM_SLOTS, "cross": CROSS_SLOTS}
_DEPTH_KEYS = {"lang": "lang_layers", "obj": "obj_layers", "cross": "cross_layers"}


@dataclass
class LxmertConfig:
    name: str = "lxmert"
    hidden: int = 768  # LXMERT's (BERT-base) width
    head_dim: int = 64  # heads = hidden / head_dim (12 in LXMERT)
    ffn_mult: int = 4  # feed-forward inner size = ffn_mult * hidden (3072 in LXMERT)
    dropout: float = 0.1
    lang_layers: int = 9
    obj_layers: int = 5
    cross_layers: int = 5
    share_cross_attention: bool = True  # LXMERT: one visual_attention for both directions
    relation_dim: int = 64  # box-geometry embedding of rel_self_att (MmNas's 4 -> 64)
    max_positions: int = 512  # BERT's position embeddings
    # "post" is LXMERT's (BERT's) LayerNorm(x + f(x)); "pre" is x + f(LayerNorm(x)) with a LayerNorm
    # closing each stream, which trains a deep stack at a higher rate.
    norm: str = "post"


@SPACES.register("lxmert")
class LxmertSpace(SearchSpace):
    Config = LxmertConfig
    name = "lxmert"
    version = 1
    parameter_free_ops = PARAMETER_FREE
    short_names = SHORT_NAMES

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__(config)
        for key in _DEPTH_KEYS.values():
            # choices() lists every layer, so an absurd depth would hang before any error could be given.
            if not 0 <= getattr(config, key) <= MAX_BLOCKS:
                raise UserError(f"space.{key}={getattr(config, key)}: must be between 0 and {MAX_BLOCKS}")
        for key in ("hidden", "head_dim", "ffn_mult", "relation_dim", "max_positions"):
            if getattr(config, key) < 1:
                raise UserError(f"space.{key}={getattr(config, key)}: must be at least 1")
        if not 0.0 <= config.dropout < 1.0:
            raise UserError(f"space.dropout={config.dropout}: must be in [0, 1)")
        if config.norm not in NORMS:
            raise UserError(f"space.norm={config.norm!r}: must be one of {', '.join(NORMS)}")
        if config.hidden % config.head_dim:
            raise UserError(f"space.hidden={config.hidden}: not a multiple of space.head_dim={config.head_dim}")

    def _depth(self, kind: str) -> int:
        return getattr(self.config, _DEPTH_KEYS[kind])

    def choices(self) -> dict[str, list[str]]:
        return {f"{kind}/{i}/{slot}": list(_CANDIDATES[kind][slot])
                for kind in ("lang", "obj", "cross") for i in range(self._depth(kind)) for slot in _SLOTS[kind]}

    def prior(self) -> dict[str, str]:
        """LXMERT's lxr955 at this space's depths: every sublayer present, plain self-attention."""
        return {label: candidates[0] for label, candidates in self.choices().items()}

    @classmethod
    def config_from_choices(cls, choices: Mapping[str, str]) -> dict[str, Any]:
        # Depth = highest layer index + 1, so a gap shows up as missing labels, not a shorter net; an
        # index past MAX_BLOCKS is left out, so validation reports it instead of building that deep.
        depth = dict.fromkeys(_DEPTH_KEYS, 0)
        for label in choices:
            match = re.fullmatch(r"(lang|obj|cross)/(\d{1,6})/\w+", label, re.ASCII)
            if match and int(match.group(2)) < MAX_BLOCKS:
                depth[match.group(1)] = max(depth[match.group(1)], int(match.group(2)) + 1)
        return {_DEPTH_KEYS[kind]: count for kind, count in depth.items()}

    def build_model(self, meta: TaskMeta, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        cfg = self.config
        pre_norm = cfg.norm == "pre"
        sizes = OpSizes(hidden=cfg.hidden, head_dim=cfg.head_dim, ffn_mult=cfg.ffn_mult,
                        dropout=cfg.dropout, relation_dim=cfg.relation_dim, norm_first=pre_norm)

        def layer(kind: str, index: int) -> dict[str, nn.Module]:
            shared: dict[str, nn.Module] = {}

            def make(name: str) -> nn.Module:
                # Both directions' cross_att candidates get the layer's one module when shared; the
                # cache lives per layer, so nothing is shared across layers.
                if name == "cross_att" and cfg.share_cross_attention:
                    if name not in shared:
                        shared[name] = make_op(name, sizes)
                    return shared[name]
                return make_op(name, sizes)

            return {slot: block_factory(f"{kind}/{index}/{slot}", list(_CANDIDATES[kind][slot]), make)
                    for slot in _SLOTS[kind]}

        layers = {kind: [layer(kind, i) for i in range(self._depth(kind))] for kind in _DEPTH_KEYS}
        embedding = LxmertEmbedding(meta.vocab_size, cfg.hidden, meta.feature_dim, cfg.dropout,
                                    cfg.max_positions, meta.word_vectors)
        return VisionLanguageModel(embedding, LxmertEncoder(layers["lang"], layers["obj"], layers["cross"],
                                                            cfg.relation_dim, cfg.hidden if pre_norm else 0),
                                   head)

    def describe(self, choices: Mapping[str, str]) -> str:
        """E.g. ``lang: SA+FFN x9 | obj: SA+FFN x5 | cross (lang/obj): X+SA+FFN/X+SA+FFN x5``."""

        def ops(prefix: str, slots: tuple[str, ...]) -> str:
            names = [SHORT_NAMES.get(choices.get(f"{prefix}/{slot}", "?"), "?") for slot in slots]
            kept = [name for name in names if name != SHORT_NAMES["identity"]]
            return "+".join(kept) or "-"

        def stream(kind: str) -> list[str]:
            if kind != "cross":
                return [ops(f"{kind}/{i}", SINGLE_STREAM_SLOTS) for i in range(self._depth(kind))]
            return [f"{ops(f'cross/{i}', CROSS_SLOTS[0::2])}/{ops(f'cross/{i}', CROSS_SLOTS[1::2])}"
                    for i in range(self._depth(kind))]

        def counted(names: list[str]) -> str:
            return run_length(names, separator=" ", joiner=", ", empty="none")

        return (f"lang: {counted(stream('lang'))} | obj: {counted(stream('obj'))} | "
                f"cross (lang/obj): {counted(stream('cross'))}")
