"""The fused attention kernel (scaled_dot_product_attention) equals MmNas's written-out attention."""

from __future__ import annotations

import math

import torch

from search_spaces.mmnas.ops import MultiHeadAttention, OpSizes


def written_out(attention: MultiHeadAttention, query: torch.Tensor, memory: torch.Tensor, keep: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """MmNas's MHAtt: softmax(QK^T / sqrt(d) + bias, masked with -1e9) V, then the merge projection."""
    batch, length, hidden = query.shape
    split = lambda x: x.view(batch, -1, attention.heads, attention.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = split(attention.query(query)), split(attention.key(memory)), split(attention.value(memory))
    scores = q @ k.transpose(-2, -1) / math.sqrt(attention.head_dim) + bias
    scores = scores.masked_fill(~keep[:, None, None, :], -1e9)
    out = scores.softmax(-1) @ v
    return attention.merge(out.transpose(1, 2).reshape(batch, length, hidden))


def test_fused_attention_matches_the_written_out_softmax() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(OpSizes(hidden=32, head_dim=8, ffn_mult=4, dropout=0.1, relation_dim=4)).eval()
    query, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
    bias = torch.randn(3, 4, 5, 7)  # relation self-attention adds a geometry bias per head
    with torch.no_grad():
        fused = attention(query, memory, keep, bias)
        assert torch.allclose(fused, written_out(attention, query, memory, keep, bias), atol=1e-5)
        assert torch.allclose(attention(query, memory, keep), written_out(attention, query, memory, keep,
                                                                          torch.zeros(3, 4, 5, 7)), atol=1e-5)


def test_training_attention_drops_softmax_weights_with_the_fast_mask() -> None:
    """On CPU in training, attention is written out so its weights use nas.dropout's mask."""
    from nas.dropout import dropout

    torch.manual_seed(0)
    attention = MultiHeadAttention(OpSizes(hidden=32, head_dim=8, ffn_mult=4, dropout=0.25, relation_dim=4))
    query, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
    bias = torch.randn(3, 4, 5, 7)
    torch.manual_seed(1)
    trained = attention.train()(query, memory, keep, bias)

    batch = query.shape[0]
    split = lambda x: x.view(batch, -1, attention.heads, attention.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = split(attention.query(query)), split(attention.key(memory)), split(attention.value(memory))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(attention.head_dim) + bias).masked_fill(~keep[:, None, None, :], -1e9)
    torch.manual_seed(1)
    weights = dropout(scores.softmax(-1), 0.25, True)
    assert (weights == 0).any() and not (weights == 0).all()
    expected = attention.merge((weights @ v).transpose(1, 2).reshape(batch, 5, 32))
    assert torch.allclose(trained, expected, atol=1e-5)
    # Without dropout, training mode is the fused kernel and equals evaluation mode.
    attention.dropout = 0.0
    assert torch.allclose(attention(query, memory, keep, bias), attention.eval()(query, memory, keep, bias))
