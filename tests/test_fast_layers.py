"""The CPU fast paths compute the same thing as the written-out layers they replace."""

from __future__ import annotations

import math

import pytest
import torch

from nas.dropout import LANE_LEVELS, Dropout, dropout
from nas.layers import McanLayerNorm


def written_out_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """MCAN's LayerNorm as MCAN writes it: unbiased std, eps added to the std."""
    return weight * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) + bias


def test_layer_norm_backward_passes_gradcheck_in_float64() -> None:
    torch.manual_seed(0)
    norm = McanLayerNorm(7).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))


def test_layer_norm_equals_the_written_out_formula_in_value_and_gradients() -> None:
    torch.manual_seed(0)
    norm = McanLayerNorm(64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 * torch.randn(4, 9, 64) + 1).requires_grad_()
    upstream = torch.randn(4, 9, 64)
    fast = torch.autograd.grad(norm(x), [x, norm.weight, norm.bias], upstream)
    reference_out = written_out_layer_norm(x, norm.weight, norm.bias, norm.eps)
    reference = torch.autograd.grad(reference_out, [x, norm.weight, norm.bias], upstream)
    assert torch.allclose(norm(x), reference_out, atol=1e-5)
    for got, want in zip(fast, reference):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_layer_norm_of_a_constant_row_is_the_bias_with_finite_gradients() -> None:
    norm = McanLayerNorm(8)
    x = torch.full((2, 8), 3.0, requires_grad=True)
    out = norm(x)
    out.sum().backward()
    assert torch.equal(out.detach(), norm.bias.detach().expand(2, 8))
    assert torch.isfinite(x.grad).all()  # torch.std's own backward gives NaN here


def test_dropout_drops_at_the_quantised_rate_in_every_lane_and_rescales_exactly() -> None:
    torch.manual_seed(0)
    p = 0.1
    threshold = round(p * LANE_LEVELS)
    x = torch.ones(400_000, 4)  # column j is lane j of each 64-bit random word
    out = dropout(x, p, True)
    dropped = (out == 0).double().mean(0)
    rate = threshold / LANE_LEVELS
    tolerance = 5 * math.sqrt(rate * (1 - rate) / x.shape[0])  # five standard errors
    assert torch.all((dropped - rate).abs() < tolerance), dropped
    kept = out[out != 0]
    assert torch.all(kept == LANE_LEVELS / (LANE_LEVELS - threshold))
    assert abs(out.mean().item() - 1.0) < 5 * math.sqrt(rate / (1 - rate) / x.numel())


def test_dropout_backward_uses_the_forward_mask_and_seeds_repeat() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    out = dropout(x, 0.3, True)
    out.backward(torch.ones_like(out))
    scale = LANE_LEVELS / (LANE_LEVELS - round(0.3 * LANE_LEVELS))
    expected_grad = torch.where(out == 0, 0.0, scale)
    assert torch.equal(x.grad, expected_grad)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.3, True), out)
    assert not torch.equal(dropout(x, 0.3, True), out)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_module_edges(p: float) -> None:
    layer = Dropout(p)
    x = torch.randn(10, 10)
    assert layer.eval()(x) is x
    out = layer.train()(x)
    if p == 0.0:
        assert out is x
    elif p == 1.0:
        assert torch.equal(out, torch.zeros_like(x))
    else:
        assert set(torch.unique(out / x).tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


def test_relation_paths_equal_autograd_through_the_written_out_formulas() -> None:
    from search_spaces.mmnas.relation import _GeometryEmbedding, _RelationLogBias

    torch.manual_seed(0)
    geometry = torch.randn(2, 5, 5, 4, dtype=torch.float64)
    params = [torch.randn(6, 4), torch.randn(6), torch.randn(3, 6), torch.randn(3) + 0.5]  # some logits under 1e-6
    params = [p.double().requires_grad_() for p in params]

    def written_out(weight1, bias1, weight2, bias2):
        relation = torch.relu(torch.nn.functional.linear(geometry, weight1, bias1))
        heads = torch.relu(torch.nn.functional.linear(relation, weight2, bias2))
        return heads.clamp(min=1e-6).log().permute(0, 3, 1, 2)

    def fast(weight1, bias1, weight2, bias2):
        return _RelationLogBias.apply(_GeometryEmbedding.apply(geometry, weight1, bias1), weight2, bias2)

    upstream = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    got_value, want_value = fast(*params), written_out(*params)
    assert got_value.is_contiguous() and (want_value == math.log(1e-6)).any()
    torch.testing.assert_close(got_value, want_value)
    for got, want in zip(torch.autograd.grad(got_value, params, upstream),
                         torch.autograd.grad(want_value, params, upstream)):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(fast, params)


def test_hand_written_backward_passes_run_under_bf16_autocast_and_track_float32() -> None:
    # Under autocast the saved activations are bf16 while the weights stay float32; the relation
    # backward once multiplied the two and failed on the first bf16 training step.
    from search_spaces.mmnas.relation import embed_geometry, relation_log_bias

    torch.manual_seed(0)
    geometry = torch.rand(2, 5, 5, 4)
    embed, heads, project, norm = (torch.nn.Linear(4, 16), torch.nn.Linear(16, 8), torch.nn.Linear(16, 16),
                                   McanLayerNorm(16))
    with torch.no_grad():
        heads.bias.add_(1.0)  # most head logits positive, so the log has gradients to compare
    x = torch.randn(2, 5, 16, requires_grad=True)
    weights = [embed.weight, embed.bias, heads.weight, heads.bias, project.weight, norm.weight, norm.bias, x]
    upstream_bias, upstream_norm = torch.randn(2, 8, 5, 5), torch.randn(2, 5, 16)

    def gradients(autocast: bool) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            bias = relation_log_bias(embed_geometry(geometry, embed), heads)  # (B, h, N, N)
            normed = norm(project(x))  # (B, N, H)
        assert (bias.dtype == torch.bfloat16) == autocast
        loss = (bias.float() * upstream_bias).sum() + (normed.float() * upstream_norm).sum()
        return list(torch.autograd.grad(loss, weights))

    for got, want in zip(gradients(True), gradients(False)):
        assert got.dtype == want.dtype == torch.float32
        assert (got - want).abs().max() <= 2e-2 * want.abs().max()


def test_relu_dropout_is_relu_then_dropout_with_the_same_draws() -> None:
    from nas.dropout import ReluDropout, relu_dropout

    x = torch.randn(300, 41, requires_grad=True)
    torch.manual_seed(5)
    fused = relu_dropout(x, 0.2, True)
    fused.backward(torch.ones_like(fused))
    torch.manual_seed(5)
    expected = dropout(torch.relu(x), 0.2, True)
    assert torch.equal(fused, expected)
    scale = LANE_LEVELS / (LANE_LEVELS - round(0.2 * LANE_LEVELS))
    assert torch.equal(x.grad, torch.where(fused > 0, scale, 0.0))
    assert torch.equal(ReluDropout(0.2).eval()(x), torch.relu(x))
