"""IEP's program generator: an LSTM encoder-decoder from expression tokens to program tokens.

The encoder reads the expression (its last real token's state summarises it); the decoder reads
the previous program token's embedding joined with that summary at every step, and a linear
layer scores the next token, as IEP's ``Seq2Seq`` does. ``<NULL>`` and ``<START>`` are never
emitted. Programs are ``<START> tokens <END>`` rows padded with ``<NULL>`` (``tasks/clevr_ref/programs.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tasks.clevr_ref.programs import END, NULL, START

__all__ = ["ProgramGenerator"]


class ProgramGenerator(nn.Module):
    """Args:
        vocab_size: expression-token vocabulary size (id 0 is padding).
        program_vocab: program-token vocabulary size.
        word_dim: token embedding size (of expression and program tokens).
        hidden: LSTM width.
        layers: LSTM layers of encoder and decoder.
        max_length: longest program emitted, ``<START>`` and ``<END>`` included.
        word_vectors: (vocab_size, word_dim) initial expression embeddings, or None.
    """

    def __init__(self, vocab_size: int, program_vocab: int, word_dim: int, hidden: int, layers: int,
                 max_length: int, word_vectors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.max_length = max_length
        self.word_embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if word_vectors is not None:
            self.word_embedding.weight.data.copy_(word_vectors)
        self.encoder = nn.LSTM(word_dim, hidden, layers, batch_first=True)
        # A plain matrix, not an nn.Embedding: train.init matches nn.Embedding rows by *expression* token.
        self.program_embedding = nn.Parameter(torch.randn(program_vocab, word_dim) * 0.1)
        self.decoder = nn.LSTM(word_dim + hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, program_vocab)
        never = torch.zeros(program_vocab, dtype=torch.bool)
        never[[NULL, START]] = True
        self.register_buffer("never", never, persistent=False)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, T) ids, 0-padded -> (B, hidden), the top layer's state after the last real token
        lengths = (tokens != 0).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.word_embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (state, _) = self.encoder(packed)
        return state[-1]

    def _scores(self, previous: torch.Tensor, summary: torch.Tensor, state=None):
        # previous: (B, L) token ids; summary: (B, hidden) -> (B, L, V) log-probabilities, LSTM state
        embedded = F.embedding(previous, self.program_embedding)  # (B, L, E)
        inputs = torch.cat([embedded, summary.unsqueeze(1).expand(-1, previous.shape[1], -1)], dim=-1)
        out, state = self.decoder(inputs, state)
        logits = self.out(out).masked_fill(self.never, float("-inf"))
        return logits.log_softmax(-1), state

    def log_likelihood(self, tokens: torch.Tensor, programs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probability of each program (its tokens after ``<START>``, ``<END>`` included)."""
        # tokens: (B, T); programs: (B, P) -> (B,)
        log_probs, _ = self._scores(programs[:, :-1], self.encode(tokens))  # (B, P-1, V)
        targets = programs[:, 1:]
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, P-1)
        return picked.masked_fill(targets == NULL, 0.0).sum(1)

    def decode(self, tokens: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Programs (B, max_length) decoded greedily or sampled, and each one's log-probability (B,)."""
        summary = self.encode(tokens)
        rows = tokens.shape[0]
        previous = torch.full((rows, 1), START, dtype=torch.long, device=tokens.device)
        out = [previous]
        total = summary.new_zeros(rows)
        running = torch.ones(rows, dtype=torch.bool, device=tokens.device)
        state = None
        for _ in range(self.max_length - 1):
            log_probs, state = self._scores(previous, summary, state)
            step = log_probs[:, -1]  # (B, V)
            chosen = torch.multinomial(step.exp(), 1).squeeze(1) if sample else step.argmax(-1)
            total = total + step.gather(1, chosen.unsqueeze(1)).squeeze(1) * running
            chosen = chosen.masked_fill(~running, NULL)
            out.append(chosen.unsqueeze(1))
            running = running & (chosen != END)
            previous = chosen.masked_fill(chosen == NULL, END).unsqueeze(1)  # finished rows feed a harmless token
            if not bool(running.any()):
                break
        return torch.cat(out, 1), total
