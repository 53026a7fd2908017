"""``train.compile``: the compiled training forward computes what the plain one computes.

The graph capture (dynamo and AOT autograd through the custom LayerNorm, relation and dropout
functions) is what can break; it is checked here with the ``aot_eager`` backend, which runs the
captured graphs without generating C++ (inductor's code generation takes minutes on two cores and is
measured in ``benchmarks/retrain_step.py --compile`` instead).
"""

from __future__ import annotations

import pytest
import torch

from nas.compile import compile_forward
from nas.config import TrainConfig
from nas.data import make_eval_loader
from nas.errors import UserError
from nas.training import check_train_config
from tests.test_text_cache import tiny_model, tiny_pairs


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_compiled_forward_gives_the_plain_outputs_and_gradients_across_batch_sizes() -> None:
    model = tiny_model()
    compiled = compile_forward(model, "default", backend="aot_eager")
    batches = list(make_eval_loader(tiny_pairs(), 37))  # 37, 37, ... then a shorter last batch: a recompile
    assert len({len(b["tokens"]) for b in batches}) == 2
    for batch in batches:
        batch["pair_id"] = [0] * len(batch["tokens"])  # a non-tensor entry must not reach the graph
        model.zero_grad(set_to_none=True)
        plain = model(batch)
        plain.square().sum().backward()
        plain_grads = _grads(model)
        model.zero_grad(set_to_none=True)
        out = compiled(batch)
        out.square().sum().backward()
        torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)
        grads = _grads(model)
        assert grads.keys() == plain_grads.keys() and len(grads) > 10
        for name in grads:
            torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_mode_compiles_through_the_fast_dropout_and_draws_the_same_masks() -> None:
    model = tiny_model().train()
    compiled = compile_forward(model, "default", backend="aot_eager")
    batch = next(iter(make_eval_loader(tiny_pairs(), 16)))
    compiled(batch)  # compile first, so both runs below start from the same generator state
    torch.manual_seed(3)
    plain = model(batch)
    torch.manual_seed(3)
    out = compiled(batch)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    torch.manual_seed(4)
    assert not torch.equal(compiled(batch), plain)  # dropout is live: another seed, other masks
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_off_is_the_module_itself_and_bad_modes_are_refused() -> None:
    model = tiny_model()
    assert compile_forward(model, "off") is model
    with pytest.raises(UserError, match="train.compile: 'fast' is not one of off, default"):
        check_train_config(TrainConfig(compile="fast"))
