"""The sizes every SimREC candidate op is built from."""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.mmnas.ops import OpSizes

__all__ = ["SimrecSizes"]


@dataclass(frozen=True)
class SimrecSizes:
    """Args:
        hidden: model width H.
        word_dim: word-embedding size E the language ops read.
        head_dim: attention head size (heads = H / head_dim) of self- and cross-attention.
        ffn_mult: feed-forward inner size = ffn_mult * H.
        dropout: dropout inside every op.
        garan_heads: GARAN's word groups (SimREC's n_head=2).
        scales: pooling factors of multi-scale fusion (1 = the cell map itself).
        transformer_layers: depth of the ``transformer`` language op.
        max_positions: longest expression the ``transformer`` op embeds positions for.
    """

    hidden: int
    word_dim: int
    head_dim: int
    ffn_mult: int
    dropout: float
    garan_heads: int
    scales: tuple[int, ...]
    transformer_layers: int
    max_positions: int

    def sublayer(self) -> OpSizes:
        """MmNas's sublayer sizes, for the attention and feed-forward sublayers reused from there."""
        return OpSizes(hidden=self.hidden, head_dim=self.head_dim, ffn_mult=self.ffn_mult,
                       dropout=self.dropout, relation_dim=1)
