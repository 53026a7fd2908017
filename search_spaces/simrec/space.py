"""The SimREC search space: one-stage referring-expression grounding, one op per pipeline stage.

Luo et al., "What Goes beyond Multi-modal Fusion in One-stage Referring Expression
Comprehension: An Empirical Study" (SimREC, https://arxiv.org/abs/2204.07913); its model
(luogen1996/SimREC ``simrec/models/simrec.py``) is composed from a visual backbone, a language
encoder, a fusion manner, a multi-scale manner, an attention manner and a head. Here the visual
backbone is the task's grid features (or regions) and the head is the task's; the stages between
are searched, one label each, in network order:

- ``language`` in {lstm_sa, transformer}: SimREC's LSTM + self-attention encoder, or a transformer;
- ``fusion`` in {simple, multi_scale}: text-gated cells, or that gating at ``space.scales`` merged;
- ``attention`` in {garan, cross}: GARAN collect-and-diffuse attention, or plain cross-attention;
- ``refine`` in {identity, feed_forward}: nothing more (SimREC), or a feed-forward sublayer.

``multi_scale`` needs the cells' 2-D layout, which it reads from the cell boxes (``clevr_ref``);
on regions that form no grid (``vgd``) it fuses each region and the regions' mean instead (see
``fusion.py``). The prior, SimREC's default layout, ships as ``genotypes/simrec.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from torch import nn

from nas.errors import UserError
from nas.model import VisionLanguageModel
from nas.registry import SPACES
from nas.space import BlockFactory, SearchSpace
from nas.task import TaskMeta
from search_spaces.simrec.backbone import SimrecBackbone
from search_spaces.simrec.embedding import SimrecEmbedding
from search_spaces.simrec.ops import LABELS, PARAMETER_FREE, SHORT_NAMES, make_op
from search_spaces.simrec.sizes import SimrecSizes

__all__ = ["SimrecSpace", "SimrecConfig", "MAX_SCALE"]

MAX_SCALE = 64  # coarsest pooling factor; a bound on a mistyped scale, not a useful setting


@dataclass
class SimrecConfig:
    name: str = "simrec"
    hidden: int = 512  # SimREC's hidden_size
    word_dim: int = 300  # SimREC's word_embed_size (GloVe); ignored when the task supplies word vectors
    head_dim: int = 64  # heads = hidden / head_dim (SimREC's language self-attention: 8 heads of 64)
    ffn_mult: int = 4  # SimREC's ffn_size 2048 = 4 * 512
    dropout: float = 0.1
    garan_heads: int = 2  # GARAN's n_head
    scales: list[int] = field(default_factory=lambda: [1, 2, 4])  # multi_scale's pooling factors, 1 first
    transformer_layers: int = 2
    max_positions: int = 64  # the transformer op's learned positions
    flat_mlp: int = 512  # the expression pooling's scoring MLP
    box_features: bool = True  # add each cell's normalised box to its features


@SPACES.register("simrec")
class SimrecSpace(SearchSpace):
    Config = SimrecConfig
    name = "simrec"
    version = 1
    parameter_free_ops = PARAMETER_FREE
    short_names = SHORT_NAMES

    def __init__(self, config: SimrecConfig) -> None:
        super().__init__(config)
        for key in ("hidden", "word_dim", "head_dim", "ffn_mult", "garan_heads", "transformer_layers",
                    "max_positions", "flat_mlp"):
            if getattr(config, key) < 1:
                raise UserError(f"space.{key}={getattr(config, key)}: must be at least 1")
        if not 0.0 <= config.dropout < 1.0:
            raise UserError(f"space.dropout={config.dropout}: must be in [0, 1)")
        for key in ("head_dim", "garan_heads"):
            if config.hidden % getattr(config, key):
                raise UserError(f"space.hidden={config.hidden}: not a multiple of space.{key}={getattr(config, key)}")
        if config.hidden % 2:
            raise UserError(f"space.hidden={config.hidden}: must be even (lstm_sa runs two directions of hidden/2)")
        scales = list(config.scales)
        if not scales or scales[0] != 1 or any(b <= a for a, b in zip(scales, scales[1:])) or scales[-1] > MAX_SCALE:
            raise UserError(f"space.scales={scales}: must be increasing pooling factors starting at 1 "
                            f"(the cell map itself), at most {MAX_SCALE}, e.g. [1, 2, 4]")

    def sizes(self, word_dim: int) -> SimrecSizes:
        cfg = self.config
        return SimrecSizes(hidden=cfg.hidden, word_dim=word_dim, head_dim=cfg.head_dim, ffn_mult=cfg.ffn_mult,
                           dropout=cfg.dropout, garan_heads=cfg.garan_heads, scales=tuple(cfg.scales),
                           transformer_layers=cfg.transformer_layers, max_positions=cfg.max_positions)

    def choices(self) -> dict[str, list[str]]:
        return {label: list(candidates) for label, candidates in LABELS.items()}

    def prior(self) -> dict[str, str]:
        """SimREC's default: LSTM_SA, simple fusion at every scale merged by the multi-scale neck, GARAN."""
        return {"language": "lstm_sa", "fusion": "multi_scale", "attention": "garan", "refine": "identity"}

    def build_model(self, meta: TaskMeta, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        cfg = self.config
        embedding = SimrecEmbedding(meta.vocab_size, cfg.word_dim, cfg.hidden, meta.feature_dim, cfg.box_features,
                                    cfg.dropout, meta.word_vectors)
        sizes = self.sizes(embedding.word_dim)

        def make(name: str) -> nn.Module:
            return make_op(name, sizes)

        blocks = {label: block_factory(label, candidates, make) for label, candidates in self.choices().items()}
        backbone = SimrecBackbone(blocks["language"], blocks["fusion"], blocks["attention"], blocks["refine"],
                                  cfg.hidden, cfg.flat_mlp, cfg.dropout)
        return VisionLanguageModel(embedding, backbone, head)

    def describe(self, choices: Mapping[str, str]) -> str:
        """E.g. ``language: LSTM-SA | fusion: MSF(1,2,4) | attention: GARAN | refine: -``."""
        parts = []
        for label in LABELS:
            op = choices.get(label, "?")
            name = SHORT_NAMES.get(op, "?")
            if op == "multi_scale":
                name += f"({','.join(str(s) for s in self.config.scales)})"
            parts.append(f"{label}: {name}")
        return " | ".join(parts)
