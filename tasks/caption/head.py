"""The caption task's head: a word predictor, an answer classifier and how to decode.

The unified space's captioner (``search_spaces/unified/captioner.py``) drives it; a space whose
model only calls ``head(text, text_keep, image, image_keep)`` cannot (``Task.needs_generation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas.heads import FusionHead
from tasks.caption.vocab import SpecialTokens

__all__ = ["CaptionHead", "DecodingSettings"]


@dataclass(frozen=True)
class DecodingSettings:
    beam_size: int  # 1: greedy
    length_penalty: float  # beam score = sum log-prob / length ** length_penalty (0: the raw sum)
    max_length: int  # generated tokens, EOS included


class CaptionHead(nn.Module):
    """Args:
        hidden: backbone width H.
        vocab_size: word vocabulary size V (special tokens included).
        num_answers: VQA answer classes (0: the head answers no questions).
        flat_mlp, dropout: the answer classifier's AttFlat sizes (MmNas's fusion head).
        special: the special token ids.
        decoding: beam search settings at evaluation.
        scst: train self-critically (CIDEr-D reward) instead of cross-entropy.
        scst_samples: captions sampled per image in self-critical training; with one the baseline is
            the greedy caption, with more each sample's baseline is the mean reward of the others.
    """

    generates_text = True

    def __init__(self, hidden: int, vocab_size: int, num_answers: int, flat_mlp: int, dropout: float,
                 special: SpecialTokens, decoding: DecodingSettings, scst: bool, scst_samples: int = 1) -> None:
        super().__init__()
        self.vocab_size, self.num_answers = vocab_size, num_answers
        self.special, self.decoding, self.scst, self.scst_samples = special, decoding, scst, scst_samples
        # BERT's masked-LM prediction head: a transform, then the vocabulary projection.
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12))
        self.words = nn.Linear(hidden, vocab_size)
        self.answers = FusionHead(hidden, flat_mlp, num_answers, dropout=dropout) if num_answers else None

    def word_logits(self, text: torch.Tensor) -> torch.Tensor:
        # text: (..., H) -> (..., V)
        return self.words(self.transform(text))

    def answer_logits(self, text: torch.Tensor, text_keep: torch.Tensor, image: torch.Tensor,
                      image_keep: torch.Tensor) -> torch.Tensor:
        # text: (B, T, H); image: (B, N, H) -> (B, A)
        return self.answers(text, text_keep, image, image_keep)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        raise TypeError("CaptionHead is driven through word_logits/answer_logits by a generating model")
