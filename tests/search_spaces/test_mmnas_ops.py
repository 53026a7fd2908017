import math

import pytest
import torch

from nas.space import fixed_block_factory
from nas.strategies.mmnas import MmnasStrategy, MmnasStrategyConfig
from nas.supernet import GatedMixedOp
from nas.task import TaskMeta
from search_spaces.mmnas import MmnasConfig, MmnasSpace
from search_spaces.mmnas.geometry import box_geometry
from search_spaces.mmnas.ops import OPS, OpSizes, make_op

SIZES = OpSizes(hidden=32, head_dim=8, ffn_mult=2, dropout=0.0, relation_dim=6)


def inputs(batch=2, length=5, context_length=4):
    torch.manual_seed(0)
    x = torch.randn(batch, length, 32)
    keep = torch.ones(batch, length, dtype=torch.bool)
    keep[0, 3:] = False  # sample 0 has 3 real positions
    context = torch.randn(batch, context_length, 32)
    context_keep = torch.ones(batch, context_length, dtype=torch.bool)
    context_keep[1, 2:] = False
    relation = torch.rand(batch, length, length, 6)
    return x, keep, context, context_keep, relation


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_keep_shape(name: str) -> None:
    op = make_op(name, SIZES).eval()
    x, keep, context, context_keep, relation = inputs()
    assert op(x, keep, context, context_keep, relation).shape == (2, 5, 32)


@pytest.mark.parametrize("name", ["self_att", "rel_self_att", "guided_att"])
def test_padding_does_not_leak_into_real_positions(name: str) -> None:
    op = make_op(name, SIZES).eval()
    x, keep, context, context_keep, relation = inputs()
    before = op(x, keep, context, context_keep, relation)
    x2, context2 = x.clone(), context.clone()
    x2[0, 3:] = 100.0  # padded regions of sample 0
    context2[1, 2:] = -50.0  # padded tokens of sample 1
    after = op(x2, keep, context2, context_keep, relation)
    torch.testing.assert_close(after[0, :3], before[0, :3])
    torch.testing.assert_close(after[1], before[1])


def test_relation_attention_with_neutral_bias_equals_self_attention() -> None:
    rsa, sa = make_op("rel_self_att", SIZES).eval(), make_op("self_att", SIZES).eval()
    sa.load_state_dict({k: v for k, v in rsa.state_dict().items() if not k.startswith("relation_to_heads")})
    with torch.no_grad():  # relu(0*r + 1) = 1 -> log-bias 0 everywhere
        rsa.relation_to_heads.weight.zero_()
        rsa.relation_to_heads.bias.fill_(1.0)
    x, keep, context, context_keep, relation = inputs()
    torch.testing.assert_close(rsa(x, keep, None, None, relation), sa(x, keep))
    with torch.no_grad():  # a real geometry bias changes the output
        rsa.relation_to_heads.weight.normal_()
    assert not torch.allclose(rsa(x, keep, None, None, relation), sa(x, keep))


def test_box_geometry_matches_the_mmnas_formula() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 9.0, 19.0], [30.0, 10.0, 49.0, 19.0]]])
    g = box_geometry(boxes)[0]
    w, h, cx, cy = [10.0, 20.0], [20.0, 10.0], [4.5, 39.5], [9.5, 14.5]
    expected_01 = [math.log(abs(cx[0] - cx[1]) / w[0]), math.log(abs(cy[0] - cy[1]) / h[0]),
                   math.log(w[0] / w[1]), math.log(h[0] / h[1])]
    torch.testing.assert_close(g[0, 1], torch.tensor(expected_01))
    torch.testing.assert_close(g[1, 1], torch.tensor([math.log(1e-3), math.log(1e-3), 0.0, 0.0]))


def test_gate_gradient_is_the_mmnas_formula() -> None:
    torch.manual_seed(1)
    candidates = {f"op{i}": torch.nn.Linear(4, 4) for i in range(3)}
    block = GatedMixedOp("b", candidates)
    alpha = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    probs = torch.softmax(alpha, 0)
    block.active = 1
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    block.gates = one_hot + probs - probs.detach()
    x = torch.randn(2, 4)
    target = torch.randn(2, 4)
    loss = ((block(x) - target) ** 2).sum()
    loss.backward()
    with torch.no_grad():  # dL/dg_j = <dL/dout, o_j>, dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)
        outputs = [op(x) for op in block.candidates]
        grad_out = 2 * (outputs[1] - target)
        grad_gate = torch.stack([(grad_out * o).sum() for o in outputs])
        p = probs.detach()
        expected = torch.stack([(grad_gate * p * ((torch.arange(3) == i).float() - p[i])).sum() for i in range(3)])
    torch.testing.assert_close(alpha.grad, expected)
    # Only the active op's weights get gradients; inactive outputs are detached.
    assert block.candidates[1].weight.grad is not None and block.candidates[0].weight.grad is None


def test_supernet_path_equals_the_child_network() -> None:
    config = MmnasConfig(hidden=32, head_dim=8, relation_dim=6, enc_blocks=2, dec_blocks=3, dropout=0.0)
    space = MmnasSpace(config)
    meta = TaskMeta(vocab_size=30, feature_dim=12, num_outputs=5)
    strategy = MmnasStrategy(MmnasStrategyConfig(), seed=0)
    torch.manual_seed(0)
    supernet = space.build_model(meta, torch.nn.Linear(1, 1), strategy.make_block).eval()
    strategy.attach(space.prior(), torch.device("cpu"))
    choices = {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "rel_self_att", "dec/1": "guided_att",
               "dec/2": "self_att"}
    child = space.build_model(meta, torch.nn.Linear(1, 1), fixed_block_factory(choices)).eval()
    # Copy the chosen candidates' weights into the child: the keys differ only by the wrapper.
    super_state = supernet.state_dict()
    child_state = {}
    for key in child.state_dict():
        parts = key.split(".")
        if parts[0] == "backbone" and parts[1] in ("encoder", "decoder"):
            label = f"{parts[1][:3]}/{parts[2]}"
            index = strategy.blocks[label].names.index(choices[label])
            key_super = ".".join(parts[:3] + ["candidates", str(index)] + parts[3:])
        else:
            key_super = key
        child_state[key] = super_state[key_super]
    child.load_state_dict(child_state)

    batch = {"tokens": torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]]), "features": torch.randn(2, 3, 12),
             "boxes": torch.tensor([[[0, 0, 10, 10], [20, 5, 40, 30], [5, 5, 6, 6]]] * 2, dtype=torch.float),
             "num_regions": torch.tensor([3, 2]), "image_size": torch.tensor([[64, 64], [64, 64]])}
    model_out = lambda m: m.backbone(*m.embedding(batch["tokens"], batch["features"], batch["boxes"],  # noqa: E731
                                                  batch["num_regions"], batch["image_size"]), batch["boxes"])
    with strategy.fixed(choices):
        text_s, image_s = model_out(supernet)
    text_c, image_c = model_out(child)
    torch.testing.assert_close(text_s, text_c)
    torch.testing.assert_close(image_s, image_c)


@pytest.mark.parametrize("name", sorted(OPS))
def test_pre_ln_ops_add_their_update_to_the_stream_and_post_ln_ops_normalise_it(name: str) -> None:
    x, keep, context, context_keep, relation = inputs()
    pre = make_op(name, OpSizes(**{**SIZES.__dict__, "norm_first": True})).eval()
    post = make_op(name, SIZES).eval()
    post.load_state_dict(pre.state_dict())
    last = pre.net[3] if name == "feed_forward" else pre.attention.merge
    with torch.no_grad():  # f(.) = 0: pre-LN passes the stream on untouched, post-LN only normalises it
        for module in (last, post.net[3] if name == "feed_forward" else post.attention.merge):
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
    torch.testing.assert_close(pre(x, keep, context, context_keep, relation), x)
    torch.testing.assert_close(post(x, keep, context, context_keep, relation), post.norm(x))
    with torch.no_grad():  # and f reads the normalised stream: scaling x scales only the residual
        last.weight.normal_()
    scaled = pre(3 * x, keep, context, context_keep, relation) - 3 * x
    torch.testing.assert_close(scaled, pre(x, keep, context, context_keep, relation) - x, atol=1e-4, rtol=1e-4)


def test_pre_ln_space_closes_each_stream_with_a_norm_and_a_bad_norm_is_one_line() -> None:
    from nas.errors import UserError

    meta = TaskMeta(vocab_size=10, feature_dim=8, num_outputs=3)
    choices = {"enc/0": "self_att", "dec/0": "guided_att"}
    config = dict(hidden=32, enc_blocks=1, dec_blocks=1, head_dim=8, relation_dim=6, word_dim=8)
    pre = MmnasSpace(MmnasConfig(**config, norm="pre")).build_model(meta, torch.nn.Identity(),
                                                                     fixed_block_factory(choices))
    post = MmnasSpace(MmnasConfig(**config)).build_model(meta, torch.nn.Identity(), fixed_block_factory(choices))
    extra = set(pre.state_dict()) - set(post.state_dict())
    assert extra == {"backbone.text_norm.weight", "backbone.text_norm.bias",
                     "backbone.image_norm.weight", "backbone.image_norm.bias"}, extra
    assert set(post.state_dict()) < set(pre.state_dict())  # post-LN checkpoints keep their keys
    with pytest.raises(UserError, match="space.norm='mid': must be one of post, pre"):
        MmnasSpace(MmnasConfig(**config, norm="mid"))
