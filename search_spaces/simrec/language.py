"""Candidate language encoders (label ``language``): word vectors (B, T, E) -> word states (B, T, H).

``lstm_sa`` is SimREC's default encoder (``LSTM_SA``: a recurrent layer over the word embeddings,
then ``depth=1`` MCAN self-attention layer); SimREC's current code runs a one-directional GRU
there, this op a bidirectional LSTM (each direction H/2 wide), packed so padding never leaks into
the real words. ``transformer`` is a plain post-LN transformer encoder over projected words plus
learned positions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nas.dropout import Dropout
from nas.errors import UserError
from search_spaces.mmnas.ops import FeedForward, SelfAttention
from search_spaces.simrec.sizes import SimrecSizes

__all__ = ["LstmSelfAttention", "TransformerEncoder"]


class LstmSelfAttention(nn.Module):
    """BiLSTM over the words, then one self-attention + feed-forward layer (MCAN's SA)."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        if sizes.hidden % 2:
            raise UserError(f"space.hidden={sizes.hidden}: the lstm_sa op needs an even width (two directions)")
        self.lstm = nn.LSTM(sizes.word_dim, sizes.hidden // 2, batch_first=True, bidirectional=True)
        self.attention = SelfAttention(sizes.sublayer())
        self.ffn = FeedForward(sizes.sublayer())

    def forward(self, words: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        # words: (B, T, E); text_keep: (B, T) bool -> (B, T, H)
        lengths = text_keep.sum(1).clamp(min=1).cpu()  # an empty expression still gets one step
        packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=words.shape[1])
        states = self.attention(states, text_keep)  # (B, T, H)
        return self.ffn(states, text_keep)


class TransformerEncoder(nn.Module):
    """Projected words plus learned positions, LayerNorm, then ``transformer_layers`` SA + FFN layers."""

    def __init__(self, sizes: SimrecSizes) -> None:
        super().__init__()
        self.project = nn.Linear(sizes.word_dim, sizes.hidden)
        self.positions = nn.Embedding(sizes.max_positions, sizes.hidden)
        self.norm = nn.LayerNorm(sizes.hidden)
        self.drop = Dropout(sizes.dropout)
        self.layers = nn.ModuleList(nn.ModuleList([SelfAttention(sizes.sublayer()), FeedForward(sizes.sublayer())])
                                    for _ in range(sizes.transformer_layers))

    def forward(self, words: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        # words: (B, T, E); text_keep: (B, T) bool -> (B, T, H)
        if words.shape[1] > self.positions.num_embeddings:
            # The task's max_tokens and the space's positions are set in different sections.
            raise UserError(f"space.max_positions={self.positions.num_embeddings}: a batch has {words.shape[1]} "
                            "tokens; raise space.max_positions or lower task.max_tokens")
        positions = self.positions(torch.arange(words.shape[1], device=words.device))  # (T, H)
        states = self.drop(self.norm(self.project(words) + positions))  # (B, T, H)
        for attention, ffn in self.layers:
            states = ffn(attention(states, text_keep), text_keep)
        return states
