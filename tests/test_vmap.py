"""ember.func.vmap against torch.func.vmap: batching rules, in_dims/out_dims, nesting, fallback."""

import warnings

import numpy as np
import pytest
import torch

import ember
from ember.func._jvp import jacfwd
from ember.func._vmap import vmap

rng = np.random.default_rng(2)


def _a(*shape):
    return rng.standard_normal(shape)


def _check(fn, arrays, in_dims=0, out_dims=0, tol=1e-6):
    e = vmap(lambda *xs: fn(ember, *xs), in_dims=in_dims, out_dims=out_dims)(*[ember.tensor(a) for a in arrays])
    t = torch.func.vmap(lambda *xs: fn(torch, *xs), in_dims=in_dims, out_dims=out_dims)(
        *[torch.tensor(a) for a in arrays]
    )
    es = e if isinstance(e, tuple) else (e,)
    ts = t if isinstance(t, tuple) else (t,)
    for x, y in zip(es, ts):
        assert tuple(x.shape) == tuple(y.shape)
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=tol, atol=1e-9)


CASES = [
    ("unary", lambda m, x: m.exp(x).tanh() + x.sigmoid() - m.relu(x), [_a(4, 3)], 0),
    ("binary_broadcast", lambda m, x, y: x * y + x / (y.abs() + 1) - 2, [_a(4, 3), _a(4, 2, 3)], 0),
    ("unbatched_operand", lambda m, x, y: m.maximum(x, y) + m.where(x > 0, x, y), [_a(4, 3), _a(2, 3)], (0, None)),
    (
        "reductions",
        lambda m, x: x.sum() + x.sum(0).mean() + x.amax(-1).sum() + m.logsumexp(x, 1).sum(),
        [_a(5, 3, 4)],
        0,
    ),
    ("var_prod_cumsum", lambda m, x: x.var(0) + x.prod(1)[0] + m.cumsum(x, 1)[:, -1], [_a(5, 3, 3)], 0),
    ("argmax", lambda m, x: (x.argmax(), x.argmax(1)), [_a(5, 3, 4)], 0),
    ("movement", lambda m, x: x.reshape(2, 6).T.permute(1, 0).flatten().unsqueeze(0).expand(3, 12), [_a(4, 3, 4)], 0),
    ("transpose_flip", lambda m, x: x.transpose(0, 1).flip(0) + x.roll(1, 1).T, [_a(4, 3, 3)], 0),
    (
        "indexing",
        lambda m, x: x[1:, ::2].sum() + x[0, 1] + x[m.tensor([0, 2])].sum() + x[:, m.tensor([1, 0])].sum(),
        [_a(4, 3, 4)],
        0,
    ),
    (
        "cat_stack",
        lambda m, x, y: m.cat([x, y], 0).sum(0) + m.stack([x, y], -1).sum(-1).sum(0),
        [_a(4, 2, 3), _a(2, 3)],
        (0, None),
    ),
    ("matmul_both", lambda m, x, y: x @ y, [_a(4, 2, 3), _a(4, 3, 5)], 0),
    ("matmul_vec", lambda m, x, y: x @ y, [_a(4, 3), _a(4, 3, 2)], 0),
    ("matmul_left_unbatched", lambda m, x, y: x @ y, [_a(2, 3), _a(4, 3)], (None, 0)),
    ("matmul_3d_by_vec", lambda m, x, y: x @ y, [_a(5, 2, 3), _a(4, 3)], (None, 0)),
    ("matmul_vec_by_3d", lambda m, x, y: x @ y, [_a(4, 3), _a(2, 3, 5)], (0, None)),
    ("softmax", lambda m, x: m.softmax(x, -1) + m.log_softmax(x, 0), [_a(4, 3, 5)], 0),
    (
        "linear_layer_norm_gelu",
        lambda m, x, w, b: m.nn.functional.gelu(m.nn.functional.layer_norm(m.nn.functional.linear(x, w, b), (4,))),
        [_a(6, 2, 3), _a(4, 3), _a(4)],
        (0, None, None),
    ),
    ("in_dim_1", lambda m, x, y: x * y.sum(), [_a(3, 5), _a(5, 2)], (1, 0)),
    ("gather", lambda m, x: m.gather(x, 1, m.tensor([[0, 0], [1, 0]])), [_a(3, 2, 2)], 0),
]


@pytest.mark.parametrize("name,fn,arrays,in_dims", CASES, ids=[c[0] for c in CASES])
def test_vmap_matches_torch(name, fn, arrays, in_dims):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every op here has a batching rule: no loop fallback
        _check(fn, arrays, in_dims)


def test_out_dims_and_pytrees():
    x = _a(4, 3)
    _check(lambda m, x: (x * 2, x.sum()), [x], 0, (1, 0))
    e = vmap(lambda d, y: {"s": d["a"] + d["b"] * y}, in_dims=(0, None))(
        {"a": ember.tensor(x), "b": ember.tensor(x)}, ember.tensor(x[0])
    )
    np.testing.assert_allclose(e["s"].numpy(), x + x * x[0])
    # an output that does not depend on the input is expanded over the batch
    out = vmap(lambda v: ember.ones(2), in_dims=0)(ember.tensor(x))
    assert tuple(out.shape) == (4, 2)


def test_nested_vmap():
    x, y = _a(3, 4), _a(5, 4)
    e = vmap(vmap(ember.dot, in_dims=(None, 0)), in_dims=(0, None))(ember.tensor(x), ember.tensor(y))
    np.testing.assert_allclose(e.numpy(), x @ y.T, rtol=1e-6)
    e = vmap(vmap(lambda a: (a * a).sum()))(ember.tensor(_a(2, 3, 4)))
    assert tuple(e.shape) == (2, 3)


def test_chunk_size():
    x = _a(7, 3)
    e = vmap(lambda v: v.softmax(0), chunk_size=3)(ember.tensor(x))
    np.testing.assert_allclose(e.numpy(), torch.tensor(x).softmax(1).numpy(), rtol=1e-6)


def test_fallback_warns_and_is_correct():
    x = _a(4, 5)
    idx = np.array([[0, 2], [1, 1], [4, 0], [3, 3]])
    with pytest.warns(UserWarning, match="batching rule for index_add"):
        # index_add's rule takes an unbatched index only: a batched one runs the loop
        e = vmap(lambda v, i: ember.zeros(5, dtype=ember.float64).index_add(0, i, v[:2]))(
            ember.tensor(x), ember.tensor(idx)
        )
    t = torch.func.vmap(lambda v, i: torch.zeros(5, dtype=torch.float64).index_add(0, i, v[:2]))(
        torch.tensor(x), torch.tensor(idx)
    )
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)


def test_errors():
    x = ember.ones(3, 2)
    with pytest.raises(ValueError, match="same size in the mapped dimension"):
        vmap(ember.add)(x, ember.ones(4, 2))
    with pytest.raises(ValueError, match="At least one of the inputs"):
        vmap(ember.sin, in_dims=None)(x)
    with pytest.raises(ValueError, match="expected in_dim to satisfy"):
        vmap(ember.sin, in_dims=2)(x)
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda v: v + ember.randn(2))(x)
    same = vmap(lambda v: v * 0 + ember.randn(2), randomness="same")(x)
    assert np.allclose(same.numpy()[0], same.numpy()[1])


def test_vmap_of_forward_mode_transforms():
    # forward AD runs inside vmap: per-sample Jacobians and batched JVPs, as torch.func composes them
    from ember.func._jvp import jvp

    w, x, v = _a(3, 3), _a(4, 3), _a(4, 3)
    we, tw = ember.tensor(w), torch.tensor(w)
    e = vmap(jacfwd(lambda r: (we @ r).tanh()))(ember.tensor(x))
    t = torch.func.vmap(torch.func.jacfwd(lambda r: (tw @ r).tanh()))(torch.tensor(x))
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6, atol=1e-12)
    e = vmap(lambda p, d: jvp(lambda r: r.sin().sum(), (p,), (d,))[1])(ember.tensor(x), ember.tensor(v))
    t = torch.func.vmap(lambda p, d: torch.func.jvp(lambda r: r.sin().sum(), (p,), (d,))[1])(
        torch.tensor(x), torch.tensor(v)
    )
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6, atol=1e-12)


def test_image_ops_fold_the_batch():
    x, w, b = _a(3, 2, 2, 6, 6), _a(4, 2, 3, 3), _a(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check(
            lambda m, x, w, b: m.nn.functional.avg_pool2d(m.nn.functional.conv2d(x, w, b, padding=1), 2),
            [x, w, b],
            (0, None, None),
        )
        # a batched weight (per-sample filters) is one grouped convolution, no loop
        _check(lambda m, x, w: m.nn.functional.conv2d(x, w), [_a(3, 1, 2, 5, 5), _a(3, 4, 2, 3, 3)], 0)


def test_inplace_inside_vmap():
    x = _a(4, 3)
    e = vmap(lambda v: v.clone().mul_(2).add_(v))(ember.tensor(x))
    np.testing.assert_allclose(e.numpy(), 3 * x)
    with pytest.raises(RuntimeError, match="add_"):
        vmap(lambda v, y: y.add_(v), in_dims=(0, None))(ember.tensor(x), ember.zeros(3))
