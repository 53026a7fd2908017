"""The unified search space: one transformer over [regions; text] for understanding and generation.

After VLP (Zhou et al., AAAI 2020, https://arxiv.org/abs/1909.11059): a single stack serves VQA
with a bidirectional self-attention mask and captioning with a sequence-to-sequence mask, with the
same weights. Labels, in network order (i counts layers from 0):

- ``layer/{i}/attention`` in {self_att, rel_self_att, identity}: self-attention over the joint
  sequence, optionally with MmNas's box-geometry bias between regions;
- ``layer/{i}/ffn`` in {feed_forward, identity}.

Depth is searched through ``identity`` (parameter-free, so ``strategy.max_parameter_free`` caps
it). The reference architecture is VLP's BERT stack: every layer plain self-attention plus
feed-forward (``genotypes/vlp.json`` at this space's default depth). With the caption task's head
the model is the captioner (``captioner.py``); with any other task's head it is a bidirectional
encoder in front of that head, so a unified genotype also trains on vqa, gqa or itm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from torch import nn

from nas.errors import UserError
from nas.model import VisionLanguageModel
from nas.registry import SPACES
from nas.space import BlockFactory, SearchSpace, run_length
from nas.task import TaskMeta
from search_spaces.lxmert.embedding import LxmertEmbedding
from search_spaces.mmnas.space import MAX_BLOCKS
from search_spaces.unified.backbone import SLOTS, UnifiedStack
from search_spaces.unified.captioner import UnifiedCaptioner
from search_spaces.unified.ops import ATTENTION_OPS, FFN_OPS, PARAMETER_FREE, SHORT_NAMES, OpSizes, make_op

__all__ = ["UnifiedSpace", "UnifiedConfig"]

_CANDIDATES = {"attention": ATTENTION_OPS, "ffn": FFN_OPS}


@dataclass
class UnifiedConfig:
    name: str = "unified"
    hidden: int = 256  # VLP uses BERT-base (768); 256 trains on a laptop CPU
    head_dim: int = 64
    ffn_mult: int = 4
    dropout: float = 0.1
    layers: int = 6  # VLP: 12
    relation_dim: int = 64  # box-geometry embedding read by rel_self_att
    max_positions: int = 64  # longest text (caption or question) in tokens
    # VLP mixes its objectives per batch (its s2s_prob / bi_prob); fine-tuning for captioning uses 1.0.
    seq2seq_probability: float = 0.75  # the rest of the caption batches train masked-LM (bidirectional)
    mask_probability: float = 0.15  # BERT's share of hidden words in a masked-LM batch
    # Training-objective settings: a checkpoint trained with other values still fits (``--init``).
    weightless_keys: ClassVar[frozenset[str]] = frozenset({"seq2seq_probability", "mask_probability"})


@SPACES.register("unified")
class UnifiedSpace(SearchSpace):
    Config = UnifiedConfig
    name = "unified"
    version = 1
    parameter_free_ops = PARAMETER_FREE
    short_names = SHORT_NAMES
    can_generate = True

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__(config)
        if not 1 <= config.layers <= MAX_BLOCKS:
            raise UserError(f"space.layers={config.layers}: must be between 1 and {MAX_BLOCKS}")
        for key in ("hidden", "head_dim", "ffn_mult", "relation_dim", "max_positions"):
            if getattr(config, key) < 1:
                raise UserError(f"space.{key}={getattr(config, key)}: must be at least 1")
        for key in ("dropout", "mask_probability"):
            if not 0.0 <= getattr(config, key) < 1.0:
                raise UserError(f"space.{key}={getattr(config, key)}: must be in [0, 1)")
        if not 0.0 <= config.seq2seq_probability <= 1.0:
            raise UserError(f"space.seq2seq_probability={config.seq2seq_probability}: must be in [0, 1]")
        if config.hidden % config.head_dim:
            raise UserError(f"space.hidden={config.hidden}: not a multiple of space.head_dim={config.head_dim}")

    def choices(self) -> dict[str, list[str]]:
        return {f"layer/{i}/{slot}": list(_CANDIDATES[slot]) for i in range(self.config.layers) for slot in SLOTS}

    def prior(self) -> dict[str, str]:
        """VLP's stack at this depth: plain self-attention and feed-forward in every layer."""
        return {label: candidates[0] for label, candidates in self.choices().items()}

    @classmethod
    def config_from_choices(cls, choices: Mapping[str, str]) -> dict[str, Any]:
        # Depth = highest layer index + 1, so a gap shows up as missing labels, not a shorter net.
        depth = 0
        for label in choices:
            match = re.fullmatch(r"layer/(\d{1,6})/\w+", label, re.ASCII)
            if match and int(match.group(1)) < MAX_BLOCKS:
                depth = max(depth, int(match.group(1)) + 1)
        return {"layers": depth} if depth else {}

    def build_model(self, meta: TaskMeta, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        cfg = self.config
        sizes = OpSizes(hidden=cfg.hidden, head_dim=cfg.head_dim, ffn_mult=cfg.ffn_mult, dropout=cfg.dropout,
                        relation_dim=cfg.relation_dim)
        layers = [{slot: block_factory(f"layer/{i}/{slot}", list(_CANDIDATES[slot]),
                                       lambda name: make_op(name, sizes)) for slot in SLOTS}
                  for i in range(cfg.layers)]
        embedding = LxmertEmbedding(meta.vocab_size, cfg.hidden, meta.feature_dim, cfg.dropout, cfg.max_positions,
                                    meta.word_vectors)
        backbone = UnifiedStack(layers, cfg.hidden, cfg.relation_dim)
        if getattr(head, "generates_text", False):
            return UnifiedCaptioner(embedding, backbone, head, cfg.seq2seq_probability, cfg.mask_probability)
        return VisionLanguageModel(embedding, backbone, head)

    def describe(self, choices: Mapping[str, str]) -> str:
        """E.g. ``SA+FFN x4, RSA+FFN, SA`` (a skipped sublayer is left out)."""
        layers = []
        for i in range(self.config.layers):
            names = [SHORT_NAMES.get(choices.get(f"layer/{i}/{slot}", "?"), "?") for slot in SLOTS]
            layers.append("+".join(n for n in names if n != SHORT_NAMES["identity"]) or "-")
        return run_length(layers, separator=" ", joiner=", ", empty="none")
