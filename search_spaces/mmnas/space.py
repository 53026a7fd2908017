"""The MmNas search space: 12 text-encoder and 18 image-decoder blocks, one op each.

Yu et al., "Deep Multimodal Neural Architecture Search", ACM MM 2020
(https://arxiv.org/abs/2004.12070). Encoder candidates: self-attention and
feed-forward; decoder candidates: self-attention, relation self-attention,
guided attention and feed-forward. Depth is fixed; only the op per block is
searched.
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
from search_spaces.mmnas.backbone import EncoderDecoder, TextImageEmbedding
from search_spaces.mmnas.ops import DECODER_OPS, ENCODER_OPS, SHORT_NAMES, OpSizes, make_op

__all__ = ["MmnasSpace", "MmnasConfig", "MAX_BLOCKS"]

# Most blocks a stream may have (MmNas uses 12 and 18); a bound, so a corrupted label or override
# cannot make choices() build billions of entries.
MAX_BLOCKS = 1024
NORMS = ("post", "pre")


@dataclass
class MmnasConfig:
    name: str = "mmnas"
    hidden: int = 512
    enc_blocks: int = 12
    dec_blocks: int = 18
    head_dim: int = 64  # attention head size; heads = hidden / head_dim (MmNas's "_64" ops)
    ffn_mult: int = 4
    dropout: float = 0.1
    relation_dim: int = 64  # shared box-geometry embedding (MmNas linear_y_rel: 4 -> 64)
    word_dim: int = 300  # ignored when the task supplies word vectors
    # Add the normalised box to each region's input (MmNas BBOX_FEATURE, off there). On by
    # default: relation attention only sees |dx|, so without it left/right is not observable.
    box_features: bool = True
    # "post": MmNas's LayerNorm(x + f(x)) blocks. "pre": x + f(LayerNorm(x)) blocks and a closing
    # LayerNorm per stream, which keeps the regions in the image stream however the blocks train.
    norm: str = "post"


@SPACES.register("mmnas")
class MmnasSpace(SearchSpace):
    Config = MmnasConfig
    name = "mmnas"
    version = 1
    # For diagrams (nas board): cell labels, and guided attention reads the encoder's output.
    short_names = SHORT_NAMES
    diagram_links = {"guided_att": "enc"}

    def choices(self) -> dict[str, list[str]]:
        labels = {f"enc/{i}": list(ENCODER_OPS) for i in range(self.config.enc_blocks)}
        labels.update({f"dec/{i}": list(DECODER_OPS) for i in range(self.config.dec_blocks)})
        return labels

    def prior(self) -> dict[str, str]:
        """MmNas's ``init_arch`` prior: encoder [SA, FFN] x 6, decoder [RSA, GA, FFN] x 6."""
        encoder = ["self_att", "feed_forward"]
        decoder = ["rel_self_att", "guided_att", "feed_forward"]
        prior = {f"enc/{i}": encoder[i % 2] for i in range(self.config.enc_blocks)}
        prior.update({f"dec/{i}": decoder[i % 3] for i in range(self.config.dec_blocks)})
        return prior

    def __init__(self, config: MmnasConfig) -> None:
        super().__init__(config)
        for key in ("enc_blocks", "dec_blocks"):
            # choices() lists every block, so an absurd depth would hang before any error could be given.
            # Zero blocks is refused too: with no decoder the image never meets the question, and a
            # genotype missing all its dec/ labels is far more likely cut short than meant.
            if not 1 <= getattr(config, key) <= MAX_BLOCKS:
                stream = key.split("_")[0]
                raise UserError(f"space.{key}={getattr(config, key)}: must be between 1 and {MAX_BLOCKS} "
                                f"(a genotype sets it from its highest {stream}/ label)")
        if config.norm not in NORMS:
            raise UserError(f"space.norm={config.norm!r}: must be one of {', '.join(NORMS)}")

    @classmethod
    def config_from_choices(cls, choices: Mapping[str, str]) -> dict[str, Any]:
        # Depth = highest index + 1, so a gap shows up as a missing label, not a shorter net. An index
        # past MAX_BLOCKS (e.g. a corrupted "dec/99999999999") is left out, so validation reports it as an
        # unexpected label instead of building a space that deep.
        depth = {"enc": 0, "dec": 0}
        for label in choices:
            match = re.fullmatch(r"(enc|dec)/(\d{1,6})", label, re.ASCII)
            if match and int(match.group(2)) < MAX_BLOCKS:
                depth[match.group(1)] = max(depth[match.group(1)], int(match.group(2)) + 1)
        return {"enc_blocks": depth["enc"], "dec_blocks": depth["dec"]}

    def build_model(self, meta: TaskMeta, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        cfg = self.config
        pre_norm = cfg.norm == "pre"
        sizes = OpSizes(hidden=cfg.hidden, head_dim=cfg.head_dim, ffn_mult=cfg.ffn_mult,
                        dropout=cfg.dropout, relation_dim=cfg.relation_dim, norm_first=pre_norm)

        def make(name: str) -> nn.Module:
            return make_op(name, sizes)

        blocks = {label: block_factory(label, candidates, make) for label, candidates in self.choices().items()}
        encoder = [blocks[f"enc/{i}"] for i in range(cfg.enc_blocks)]
        decoder = [blocks[f"dec/{i}"] for i in range(cfg.dec_blocks)]
        embedding = TextImageEmbedding(meta.vocab_size, cfg.word_dim, cfg.hidden, meta.feature_dim,
                                       cfg.box_features, meta.word_vectors)
        body = EncoderDecoder(encoder, decoder, cfg.relation_dim, cfg.hidden if pre_norm else 0)
        return VisionLanguageModel(embedding, body, head)

    def describe(self, choices: Mapping[str, str]) -> str:
        def names(prefix: str, count: int) -> list[str]:
            return [SHORT_NAMES.get(choices.get(f"{prefix}/{i}", "?"), "?") for i in range(count)]

        return (f"encoder: {run_length(names('enc', self.config.enc_blocks))} | "
                f"decoder: {run_length(names('dec', self.config.dec_blocks))}")
