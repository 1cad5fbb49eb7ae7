"""Batching rules of ``ember.func.vmap`` (issue 11): every primitive of the registry has a rule
or a stated reason not to, and the rules agree with ``torch.func.vmap`` (values and gradients
through vmap) or, for Ember's own gradient kernels, with the primitive run once per element."""

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as EF
from ember.func import _batching as B_
from ember.func._vmap import INPLACE_ELEMENTWISE, vmap
from ember.func._vmap_random import RANDOM
from ember.ops.dispatch import REGISTRY, apply

rng = np.random.default_rng(11)

# Primitives without a batching rule, each with the reason. Random primitives (RANDOM) are
# handled before the rules by ember/func/_vmap_random.py (the randomness= modes).
EXEMPT = {
    # factories: no tensor input, so never a batched operand
    "full": "factory",
    "arange": "factory",
    "linspace": "factory",
    "eye": "factory",
    # data-dependent output sizes: PyTorch runs these by its fallback loop (with the same
    # warning) and fails in stack when the sizes differ; Ember keeps the loop and does the same
    "bincount": "data-dependent size: PyTorch's fallback loop",
    "histc": "data-dependent range (min == max): PyTorch's fallback loop",
    "repeat_interleave_counts": "data-dependent size: PyTorch's fallback loop",
    # gradient kernels that read their forward node's saved arrays: only that node's backward
    # calls them, on the physical tensors the graph was recorded on (reverse mode inside vmap
    # records on physical tensors, ember/func/_batched_grad.py), so they never see a batched one
    "class_loss_backward": "node-backed gradient kernel",
    "layer_norm_backward": "node-backed gradient kernel",
    "batch_norm_backward": "node-backed gradient kernel",
    "scaled_dot_product_attention_backward": "node-backed gradient kernel",
    "conv2d_backward": "called only by conv2d's node backward, on its physical inputs",
    "rnn_step_backward": "node-backed gradient kernel",
    "recurrent_sequence_backward": "node-backed gradient kernel",
    # the history of a write into a view: recorded only with gradients, and an in-place op on a
    # batched tensor with history runs on the physical tensors (_batched_grad.inplace); its
    # ``chain`` param holds the logical view ops, so a direct call keeps the loop
    "copy_slices": "recorded on physical tensors under vmap; else loop fallback",
    "copy_slices_mask": "gradient of copy_slices, on physical tensors; else loop fallback",
    # fused optimizer steps (their state tensors and step counts per parameter): loop fallback
    **{n: "fused optimizer step: loop fallback" for n in REGISTRY if n.startswith("_fused_")},
    "sparse_mm": "sparse operand (values, rows, cols): loop fallback",
}


def _ember_primitives() -> list:
    """The registry's primitives defined by Ember (other tests register their own test ops)."""

    def modules(p):
        for f in [*p.impls.values(), p.cpu]:
            while isinstance(f, functools.partial):
                f = f.func
            yield getattr(f, "__module__", None) or ""

    return [n for n, p in REGISTRY.items() if any(m.startswith("ember") for m in modules(p))]


def test_every_primitive_has_a_rule_or_a_reason():
    assert len(_ember_primitives()) > 150
    missing = [
        n
        for n in _ember_primitives()
        if n not in B_.RULES
        and n.rstrip("_") not in B_.ELEMENTWISE
        and n not in INPLACE_ELEMENTWISE
        and n not in RANDOM
        and n not in EXEMPT
    ]
    assert missing == [], f"primitives with neither a batching rule nor an exemption: {missing}"
    stale = [n for n in EXEMPT if n not in REGISTRY or n in B_.RULES]
    assert stale == [], f"exemptions of primitives that are gone or have a rule: {stale}"


def _a(*shape):
    return rng.standard_normal(shape)


def _outs(x):
    return x if isinstance(x, tuple) else (x,)


def _check(fn, arrays, in_dims=0, tol=1e-6):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loop fallback would warn
        e = vmap(lambda *xs: fn(ember, *xs), in_dims=in_dims)(*[ember.tensor(a) for a in arrays])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's own fallback warnings
        t = torch.func.vmap(lambda *xs: fn(torch, *xs), in_dims=in_dims)(*[torch.tensor(a) for a in arrays])
    for x, y in zip(_outs(e), _outs(t)):
        assert tuple(x.shape) == tuple(y.shape)
        assert str(x.dtype).split(".")[-1] == str(y.dtype).split(".")[-1]
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=tol, atol=1e-9)


def _F(m):
    return EF if m is ember else TF


_spd = _a(3, 4, 4)
_spd = _spd @ _spd.transpose(0, 2, 1) + 4 * np.eye(4)
_sorted = np.sort(_a(3, 6), 1)


def _setitem(m, x, v):
    y = x.clone()
    y[1] = v
    y[:, m.tensor([0, 2])] = 2.0
    return y


VALUE_CASES = [
    ("einsum_unbatched_b", lambda m, x, y: m.einsum("ij,jk->ik", x, y), [_a(3, 2, 4), _a(4, 5)], (0, None)),
    ("einsum_implicit", lambda m, x, y: m.einsum("ij,jk", x, y), [_a(3, 2, 4), _a(3, 4, 5)], 0),
    ("einsum_ellipsis", lambda m, x, y: m.einsum("...j,j->...", x, y), [_a(3, 2, 4), _a(3, 4)], 0),
    ("lgamma_polygamma", lambda m, x: m.lgamma(x.abs() + 0.1) + m.polygamma(1, x.abs() + 0.1), [_a(3, 4)], 0),
    ("isclose", lambda m, x, y: m.isclose(x, y), [_a(3, 4), _a(4)], (0, None)),
    (
        "max_min_dim",
        lambda m, x: (*m.max(x, 1), *m.min(x, -1, keepdim=True)),
        [_a(3, 4, 5)],
        0,
    ),
    (
        "argsort_topk_cummax",
        lambda m, x: (m.argsort(x, 1), m.topk(x, 2, 0).indices, m.cummax(x, -1).indices),
        [_a(3, 4, 5)],
        0,
    ),
    (
        "norms",
        lambda m, x: (m.linalg.vector_norm(x), m.linalg.vector_norm(x, 0, dim=1), m.count_nonzero(x > 0, 0)),
        [_a(3, 4, 5)],
        0,
    ),
    ("cdist_unbatched", lambda m, x, y: m.cdist(x, y), [_a(3, 4, 2), _a(5, 2)], (0, None)),
    ("cdist_ranks", lambda m, x, y: m.cdist(x, y), [_a(3, 2, 4, 2), _a(3, 5, 2)], 0),
    ("cholesky", lambda m, x: m.linalg.cholesky(x), [_spd], 0),
    (
        "solve_triangular",
        lambda m, a, b: m.linalg.solve_triangular(a, b, upper=False),
        [np.tril(_spd), _a(4, 2)],
        (0, None),
    ),
    (
        "solve_triangular_b",
        lambda m, a, b: m.linalg.solve_triangular(a, b, upper=True),
        [np.triu(_spd[0]), _a(3, 4, 2)],
        (None, 0),
    ),
    ("searchsorted_rows", lambda m, s, v: m.searchsorted(s, v), [_sorted, _a(3, 4)], 0),
    ("searchsorted_1d", lambda m, s, v: m.searchsorted(s, v, right=True), [_sorted[0], _a(3, 2, 4)], (None, 0)),
    ("searchsorted_batched_s", lambda m, s, v: m.searchsorted(s, v), [_sorted, _a(4)], (0, None)),
    ("scatter", lambda m, x, i, s: x.scatter(0, i, s), [_a(3, 4), np.array([[1, 0], [2, 3], [0, 0]]), _a(3, 2)], 0),
    ("scatter_add", lambda m, x, i, s: x.scatter_add(0, i, s), [_a(3, 4), np.array([1, 0]), _a(3, 2)], (0, None, 0)),
    ("index_add", lambda m, x, i, s: x.index_add(0, i, s), [_a(3, 4, 2), np.array([1, 0]), _a(2, 2)], (0, None, None)),
    (
        "index_add_inplace",
        lambda m, x, s: x.clone().index_add_(-1, m.tensor([0, 1, 0]), s),
        [_a(3, 4, 2), _a(3, 4, 3)],
        0,
    ),
    ("index_put", lambda m, x, v: x.index_put((m.tensor([0, 2]),), v, accumulate=True), [_a(3, 4, 2), _a(3, 2)], 0),
    ("setitem", _setitem, [_a(3, 4, 5), _a(3, 5)], 0),
    ("one_hot", lambda m, x: _F(m).one_hot(x, 5), [np.array([[1, 2], [0, 4]])], 0),
    (
        "inplace_optim_ops",
        lambda m, x, y, z: x.clone().addcmul_(y, z, value=2).addcdiv_(y, z.abs() + 1).lerp_(y, 0.3),
        [_a(3, 4), _a(3, 4), _a(4)],
        (0, 0, None),
    ),
    ("copy_fill", lambda m, x, y, v: (x.clone().copy_(y), x.clone().fill_(v)), [_a(3, 4), _a(3, 4), _a(3)], 0),
    ("batch_norm", lambda m, x: _F(m).batch_norm(x, None, None, training=True), [_a(3, 4, 2, 5)], 0),
    (
        "batch_norm_affine",
        lambda m, x, w, b: _F(m).batch_norm(x, None, None, w, b, training=True),
        [_a(3, 4, 2), _a(3, 2), _a(2)],
        (0, 0, None),
    ),
    (
        "sdpa_unbatched_v",
        lambda m, q, k, v: _F(m).scaled_dot_product_attention(q, k, v),
        [_a(3, 2, 4, 8), _a(3, 2, 5, 8), _a(2, 5, 8)],
        (0, 0, None),
    ),
    ("sdpa_causal", lambda m, q: _F(m).scaled_dot_product_attention(q, q, q, is_causal=True), [_a(3, 4, 8)], 0),
    (
        "sdpa_float_mask",
        lambda m, q, k, mk: _F(m).scaled_dot_product_attention(q, k, k, attn_mask=mk),
        [_a(3, 4, 8), _a(3, 5, 8), _a(3, 4, 5)],
        0,
    ),
    ("constant_pad", lambda m, x: _F(m).pad(x, (1, 2, 0, 1), value=0.5), [_a(3, 2, 4)], 0),
]


@pytest.mark.parametrize("name,fn,arrays,in_dims", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_match_torch(name, fn, arrays, in_dims):
    _check(fn, arrays, in_dims)


GRAD_CASES = [
    ("einsum", lambda m, x, y: m.einsum("ij,jk->ik", x, y), [_a(3, 2, 4), _a(4, 5)], (0, None)),
    ("cdist", lambda m, x, y: m.cdist(x, y), [_a(3, 4, 2), _a(5, 2)], (0, None)),
    ("max_dim", lambda m, x, y: m.max(x * y, 0).values, [_a(3, 4, 2), _a(2)], (0, None)),
    (
        "batch_norm",
        lambda m, x, w: _F(m).batch_norm(x, None, None, w, None, training=True),
        [_a(3, 4, 2), _a(2)],
        (0, None),
    ),
    ("sdpa", lambda m, q, v: _F(m).scaled_dot_product_attention(q, q, v), [_a(3, 4, 8), _a(4, 8)], (0, None)),
    ("pad_lgamma", lambda m, x, y: _F(m).pad(m.lgamma(x.abs() + 1), (1, 2)) * y, [_a(3, 2, 4), _a(7)], (0, None)),
]


@pytest.mark.parametrize("name,fn,arrays,in_dims", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_through_vmap_match_torch(name, fn, arrays, in_dims):
    argnums = tuple(range(len(arrays)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = ember.func.grad(
            lambda *xs: vmap(lambda *ys: fn(ember, *ys), in_dims=in_dims)(*xs).pow(2).sum(), argnums=argnums
        )(*[ember.tensor(a) for a in arrays])
    t = torch.func.grad(
        lambda *xs: torch.func.vmap(lambda *ys: fn(torch, *ys), in_dims=in_dims)(*xs).pow(2).sum(), argnums=argnums
    )(*[torch.tensor(a) for a in arrays])
    for x, y in zip(e, t):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=1e-9)


def _per_element(name, arrays, in_dims, params):
    """The primitive by its rule under vmap, against the primitive once per element."""
    prim = REGISTRY[name]
    ts = [ember.tensor(a) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = vmap(lambda *xs: apply(prim, *xs, **params), in_dims=in_dims)(*ts)
    size = next(t.shape[0] for t, d in zip(ts, in_dims) if d == 0)
    rows = [apply(prim, *[t[i] if d == 0 else t for t, d in zip(ts, in_dims)], **params) for i in range(size)]
    for j, x in enumerate(_outs(e)):
        ref = ember.stack([_outs(r)[j] for r in rows])
        assert tuple(x.shape) == tuple(ref.shape)
        np.testing.assert_allclose(x.numpy(), ref.numpy(), rtol=1e-6, atol=1e-9)


def _conv_geom(pad):
    from ember.nn.functional.conv import _Geom

    return _Geom((1, 1), (pad,) * 4, (1, 1), 1)


def _avg_node():
    x = ember.randn(2, 3, 4, 4, requires_grad=True)
    return EF.avg_pool2d(x, 2)._node


def test_gradient_kernels_match_the_per_element_loop():
    _per_element("linear_backward", [_a(3, 2, 4), _a(3, 2, 5), _a(4, 5)], (0, 0, None), {"need": (True, True, True)})
    _per_element("softmax_backward", [_a(3, 2, 4), _a(3, 2, 4)], (0, 0), {"dim": 1, "log": False})
    _per_element("gelu_backward", [_a(3, 2, 4), _a(2, 4)], (0, None), {"approximate": "none", "saved": None})
    idx = np.array([[1, 0, 3], [2, 2, 0]])
    _per_element(
        "embedding_backward",
        [_a(3, 2, 3, 5), _a(4, 5), np.stack([idx, idx[::-1], idx])],
        (0, None, 0),
        {"padding_idx": None, "scale_grad_by_freq": False},
    )
    _per_element(
        "index_select_backward", [_a(3, 4, 2), np.array([2, 0, 2, 1])], (0, None), {"axis": 0, "shape": (3, 2)}
    )
    key = (slice(1, 3), np.array([0, 2]))
    _per_element("index_put_zeros", [_a(3, 2, 2)], (0,), {"shape": (4, 3), "key": key, "basic": False})
    geom = _conv_geom(1)
    _per_element(
        "conv2d_input_grad", [_a(3, 2, 4, 5, 5), _a(4, 2, 3, 3)], (0, None), {"geom": geom, "x_shape": (2, 2, 5, 5)}
    )
    _per_element(
        "conv2d_weight_grad", [_a(3, 2, 2, 5, 5), _a(3, 2, 4, 5, 5)], (0, 0), {"geom": geom, "w_shape": (4, 2, 3, 3)}
    )
    _per_element(
        "conv2d_weight_grad", [_a(2, 2, 5, 5), _a(3, 2, 4, 5, 5)], (None, 0), {"geom": geom, "w_shape": (4, 2, 3, 3)}
    )
    pool_idx = rng.integers(0, 16, (2, 3, 2, 2))
    _per_element("max_pool2d_backward", [_a(3, 2, 3, 2, 2)], (0,), {"idx": pool_idx, "in_shape": (2, 3, 4, 4)})
    _per_element("max_pool2d_gather", [_a(3, 2, 3, 4, 4)], (0,), {"idx": pool_idx, "in_shape": (2, 3, 4, 4)})
    node = _avg_node()
    _per_element(
        "avg_pool2d_backward", [_a(3, 2, 3, 2, 2)], (0,), {"geo": node.geo, "div": node.div, "in_shape": (2, 3, 4, 4)}
    )


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_and_cells(kind):
    # PyTorch has no batching rule for lstm/gru/rnn (it raises): the oracle is its per-element loop
    for cls, shape in ((kind, (3, 2, 5, 3)), (kind + "Cell", (3, 2, 3))):
        t_mod = getattr(torch.nn, cls)(3, 4, **({"batch_first": True} if cls == kind else {})).double()
        e_mod = getattr(ember.nn, cls)(3, 4, **({"batch_first": True} if cls == kind else {})).double()
        e_mod.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in t_mod.state_dict().items()})
        x = _a(*shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            e = vmap(lambda v, mod=e_mod: _outs(mod(v))[0])(ember.tensor(x))
        t = torch.stack([_outs(t_mod(torch.tensor(v)))[0] for v in x])
        np.testing.assert_allclose(e.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_per_sample_grads_run_the_gradient_kernels_physically():
    # the node-backed kernels of EXEMPT never see a batched tensor under vmap(grad): no loop
    # (running statistics would be an in-place update of an unbatched buffer: an error, as in PyTorch)
    conv, norm = ember.nn.Conv2d(2, 3, 3), ember.nn.LayerNorm(3)
    bn, lstm = ember.nn.BatchNorm2d(3, track_running_stats=False), ember.nn.LSTM(3, 3, batch_first=True)
    params = {k: v.detach() for k, v in conv.named_parameters()}

    def loss(p, x, y):
        h = ember.func.functional_call(conv, p, (x,))
        h = bn(h).mean((-1, -2))
        h = norm(lstm(h.unsqueeze(1))[0][:, 0])
        h = EF.scaled_dot_product_attention(h, h, h)
        return EF.cross_entropy(h, y)

    x, y = ember.randn(4, 2, 2, 5, 5), ember.randint(0, 3, (4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = vmap(ember.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    assert g["weight"].shape == (4, 3, 2, 3, 3)


@pytest.mark.parametrize("op,aten", [("nonzero", "aten::nonzero"), ("unique", "aten::_unique2")])
def test_dynamic_shapes_raise_as_torch(op, aten):
    x = ember.tensor([[1, 0, 2], [0, 3, 3]])
    with pytest.raises(RuntimeError, match=f"output dynamic shape. Attempted to vmap over {aten}"):
        vmap(getattr(ember, op))(x)
    with pytest.raises(RuntimeError, match=f"output dynamic shape. Attempted to vmap over {aten}"):
        torch.func.vmap(getattr(torch, op))(torch.tensor(x.numpy()))


def test_data_dependent_sizes_keep_the_loop():
    x = ember.tensor([[1, 0, 2], [0, 3, 3]])
    with pytest.warns(UserWarning, match="batching rule for bincount"):
        out = vmap(lambda v: ember.bincount(v, minlength=5))(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.func.vmap(lambda v: torch.bincount(v, minlength=5))(torch.tensor(x.numpy()))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


_IDX = np.array([[0, 1], [2, -1], [4, 0]])
INDEX_CASES = [
    ("first", lambda m, x, i: x[i], [_a(3, 5, 2), _IDX], 0),
    ("slice_before", lambda m, x, i: x[:, i], [_a(3, 2, 5), _IDX], 0),
    ("int_before", lambda m, x, i: x[1, :, i], [_a(3, 2, 4, 5), _IDX], 0),
    ("ellipsis", lambda m, x, i: x[..., i], [_a(3, 2, 4, 5), _IDX], 0),
    ("none", lambda m, x, i: x[None, i], [_a(3, 5), _IDX], 0),
    ("unbatched_x", lambda m, x, i: x[:, i], [_a(2, 5), _IDX[:, None]], (None, 0)),
]


@pytest.mark.parametrize("name,fn,arrays,in_dims", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_batched_index_tensor(name, fn, arrays, in_dims):
    _check(fn, arrays, in_dims)


def test_batched_index_gradient_and_errors():
    logits, y = _a(3, 4), np.array([1, 3, 0])
    e = ember.func.grad(lambda v: vmap(lambda r, t: r.log_softmax(-1)[t])(v, ember.tensor(y)).sum())(
        ember.tensor(logits)
    )
    t = torch.func.grad(lambda v: torch.func.vmap(lambda r, t: r.log_softmax(-1)[t])(v, torch.tensor(y)).sum())(
        torch.tensor(logits)
    )
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="Attempting to batch over indexing with a boolean mask"):
        vmap(lambda x: x[x > 0])(ember.tensor(_a(3, 4)))
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 4"):
        vmap(lambda x, i: x[i])(ember.tensor(_a(3, 4)), ember.tensor(np.array([1, 4, 0])))


def _write_into_views(m, x):
    y = x.clone() * 1
    y[:, 1].mul_(3)  # an in-place op on a view of a batched tensor with history
    y[0] += x[1]
    return (y**2).sum()


def test_inplace_on_a_view_keeps_the_gradient_under_vmap_grad():
    x = _a(3, 4, 5)
    e = vmap(ember.func.grad(lambda v: _write_into_views(ember, v)))(ember.tensor(x))
    t = torch.func.vmap(torch.func.grad(lambda v: _write_into_views(torch, v)))(torch.tensor(x))
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)


NESTED_CASES = [
    ("einsum", lambda m, x, y: m.einsum("ij,jk->ik", x, y), [_a(2, 3, 4, 5), _a(2, 3, 5, 2)]),
    ("batch_norm", lambda m, x: _F(m).batch_norm(x, None, None, training=True), [_a(2, 3, 4, 5)]),
    ("sdpa", lambda m, q: _F(m).scaled_dot_product_attention(q, q, q), [_a(2, 3, 4, 5)]),
    ("index", lambda m, x, i: x[i], [_a(2, 3, 5), np.array([[1, 2, 0], [4, 4, 3]])]),
]


@pytest.mark.parametrize("name,fn,arrays", NESTED_CASES, ids=[c[0] for c in NESTED_CASES])
def test_nested_vmap(name, fn, arrays):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = vmap(vmap(lambda *xs: fn(ember, *xs)))(*[ember.tensor(a) for a in arrays])
    t = torch.func.vmap(torch.func.vmap(lambda *xs: fn(torch, *xs)))(*[torch.tensor(a) for a in arrays])
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6, atol=1e-9)


def _foreach_steps(m, x, y, z):
    xs = [x.clone(), y.clone()]
    m._foreach_add_(xs, [z, y], alpha=2)
    m._foreach_mul_(xs, 0.5)
    m._foreach_addcmul_(xs, [z, y], [x, y], value=0.3)
    m._foreach_lerp_(xs, [x, y], 0.25)
    m._foreach_sqrt_([t.abs_() for t in xs])
    return xs[0] + xs[1].sum()


def test_foreach_ops_against_the_per_element_loop():
    x, y, z = _a(3, 4), _a(3, 4), _a(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = vmap(lambda *v: _foreach_steps(ember, *v), in_dims=(0, 0, None))(*map(ember.tensor, (x, y, z)))
    t = torch.stack([_foreach_steps(torch, *map(torch.tensor, (x[i], y[i], z))) for i in range(3)])
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="_foreach_add_"):  # an unbatched tensor written
        vmap(lambda v: ember._foreach_add_([ember.zeros(4)], [v]))(ember.tensor(x))
