"""LXMERT's encoder body: language layers, object layers, then cross-modality layers."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.lxmert.ops import LAYER_NORM_EPS
from search_spaces.mmnas.geometry import box_geometry
from search_spaces.mmnas.relation import embed_geometry

__all__ = ["LxmertEncoder", "SINGLE_STREAM_SLOTS", "CROSS_SLOTS"]

SINGLE_STREAM_SLOTS = ("self", "ffn")  # a language or object layer: self-attention, then feed-forward
# A cross-modality layer, in running order: both cross-attentions read the layer's inputs (LXMERT runs
# them in parallel), then each stream's self-attention, then each stream's feed-forward.
CROSS_SLOTS = ("lang_cross", "obj_cross", "lang_self", "obj_self", "lang_ffn", "obj_ffn")


class LxmertEncoder(nn.Module):
    """Runs the language layers on the text, the object layers on the regions, then the cross layers.

    Args:
        lang: per language layer, its blocks keyed by ``SINGLE_STREAM_SLOTS``.
        obj: per object layer, its blocks keyed by ``SINGLE_STREAM_SLOTS``.
        cross: per cross-modality layer, its blocks keyed by ``CROSS_SLOTS``.
        relation_dim: size of the shared box-geometry embedding read by relation self-attention.
        final_norm_width: with pre-LN blocks, the width H of a LayerNorm closing each stream (their
            residual sums are never normalised otherwise); 0 for LXMERT's post-LN layers.

    Every block is called as ``block(x, x_keep, context, context_keep, relation)`` and returns x's shape.
    """

    def __init__(self, lang: list[dict[str, nn.Module]], obj: list[dict[str, nn.Module]],
                 cross: list[dict[str, nn.Module]], relation_dim: int, final_norm_width: int = 0) -> None:
        super().__init__()
        self.lang = nn.ModuleList(nn.ModuleDict(layer) for layer in lang)
        self.obj = nn.ModuleList(nn.ModuleDict(layer) for layer in obj)
        self.cross = nn.ModuleList(nn.ModuleDict(layer) for layer in cross)
        self.text_norm = nn.LayerNorm(final_norm_width, eps=LAYER_NORM_EPS) if final_norm_width else nn.Identity()
        self.image_norm = nn.LayerNorm(final_norm_width, eps=LAYER_NORM_EPS) if final_norm_width else nn.Identity()
        object_blocks = [layer["self"] for layer in obj] + [layer["obj_self"] for layer in cross]
        uses_relation = any(getattr(block, "needs_relation", False) for block in object_blocks)
        # One geometry embedding shared by every relation block, as MmNas's linear_y_rel.
        self.relation = nn.Sequential(nn.Linear(4, relation_dim), nn.ReLU()) if uses_relation else None

    def forward(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                image_keep: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # text: (B, T, H); text_keep: (B, T) bool; image: (B, N, H); image_keep: (B, N) bool; boxes: (B, N, 4)
        relation = embed_geometry(box_geometry(boxes), self.relation[0]) if self.relation is not None else None
        # relation: (B, N, N, R)
        for layer in self.lang:
            text = layer["self"](text, text_keep, None, None, None)
            text = layer["ffn"](text, text_keep, None, None, None)
        for layer in self.obj:
            image = layer["self"](image, image_keep, None, None, relation)
            image = layer["ffn"](image, image_keep, None, None, relation)
        for layer in self.cross:
            text, image = (layer["lang_cross"](text, text_keep, image, image_keep, None),
                           layer["obj_cross"](image, image_keep, text, text_keep, relation))
            text = layer["lang_self"](text, text_keep, image, image_keep, None)
            image = layer["obj_self"](image, image_keep, text, text_keep, relation)
            text = layer["lang_ffn"](text, text_keep, image, image_keep, None)
            image = layer["obj_ffn"](image, image_keep, text, text_keep, relation)
        return self.text_norm(text), self.image_norm(image)  # (B, T, H), (B, N, H)
