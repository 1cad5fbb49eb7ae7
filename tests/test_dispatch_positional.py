"""The positional fast forms of dispatch (``apply_p1``/``apply_p2``) and the small-op fast paths
built on them (issue 8: dispatch overhead on 16-element ops at or below PyTorch's).

Each fast path must be indistinguishable from the general ``apply(prim, x, **params)``: a mode's
handler (capture, profiler, vmap, forward AD) sees the same primitive and params dict, the node
gets the same attributes, and values and gradients match PyTorch.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch

import ember
from ember._mode import mode
from ember.ops import elementwise as ew
from ember.ops import reduce as red
from ember.ops.capture import capture
from ember.ops.dispatch import REGISTRY, apply, apply_p1, apply_p2, run
from ember.ops.movement import view_chain
from tests.helpers import check, rand


@contextlib.contextmanager
def recording():
    """A mode that records each outermost op as (primitive name, params) and runs it eagerly."""
    calls = []

    def handler(prim, inputs, params):
        calls.append((prim.name, dict(params)))
        mode.handler = None  # ops inside the implementation are not recorded
        try:
            return run(prim, inputs, params)
        finally:
            mode.handler = handler

    prev = mode.handler
    mode.handler = handler
    try:
        yield calls
    finally:
        mode.handler = prev


# op on (a: 16 elements, m: 4x4) -> the (primitive, params) it must dispatch as
CASES = {
    "a.sum()": (lambda a, m: a.sum(), [("sum", {"axes": (0,), "keepdim": False})]),
    "m.sum(1)": (lambda a, m: m.sum(1), [("sum", {"axes": (1,), "keepdim": False})]),
    "m.sum(-1, keepdim)": (lambda a, m: m.sum(-1, keepdim=True), [("sum", {"axes": (1,), "keepdim": True})]),
    "m.sum()": (lambda a, m: m.sum(), [("sum", {"axes": (0, 1), "keepdim": False})]),
    "a.mean()": (  # without a graph, the sum is divided in place
        lambda a, m: a.mean(),
        {
            False: [("sum", {"axes": (0,), "keepdim": False}), ("div_", {})],
            True: [("sum", {"axes": (0,), "keepdim": False}), ("div", {})],
        },
    ),
    "a.view(4, 4)": (lambda a, m: a.view(4, 4), [("view", {"shape": (4, 4)})]),
    "a.view(-1, 2)": (lambda a, m: a.view(-1, 2), [("view", {"shape": (8, 2)})]),
    "a.reshape(4, 4)": (lambda a, m: a.reshape(4, 4), [("reshape", {"shape": (4, 4)})]),
    "a.reshape((2, 8))": (lambda a, m: a.reshape((2, 8)), [("reshape", {"shape": (2, 8)})]),
    "m.transpose(0, 1)": (lambda a, m: m.transpose(0, 1), [("permute", {"dims": (1, 0)})]),
    "m.transpose(-1, 1)": (lambda a, m: m.transpose(-1, 1), [("permute", {"dims": (0, 1)})]),
    "m.t()": (lambda a, m: m.t(), [("permute", {"dims": (1, 0)})]),
    "m[1]": (lambda a, m: m[1], [("getitem", {"key": (1,), "basic": True})]),
    "a[2:10]": (lambda a, m: a[2:10], [("getitem", {"key": (slice(2, 10),), "basic": True})]),
    "m.max(dim=1)": (lambda a, m: m.max(dim=1), [("max_dim", {"axis": 1, "keepdim": False})]),
    "m.min(0, keepdim)": (lambda a, m: m.min(0, keepdim=True), [("min_dim", {"axis": 0, "keepdim": True})]),
    "m @ m": (lambda a, m: m @ m, [("matmul", {})]),
    "a.sigmoid()": (lambda a, m: a.sigmoid(), [("sigmoid", {})]),
    "a * 2.5": (lambda a, m: a * 2.5, [("mul", {})]),
}


def _outputs(res):
    return tuple(res) if isinstance(res, tuple) else (res,)


def _node_attrs(node) -> dict:
    """A node's recorded attributes, but its clock stamp and the identity of its inputs."""
    out = {}
    for cls in type(node).__mro__:
        for k in getattr(cls, "__slots__", ()):
            if k in ("seq", "inputs", "edges", "__weakref__", "out", "out_vc") or not hasattr(node, k):
                continue
            v = getattr(node, k)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_modes_see_the_same_prims_and_params(name, requires_grad):
    op, expected = CASES[name]
    a = ember.tensor(rand(16), requires_grad=requires_grad)
    m = ember.tensor(rand(4, 4), requires_grad=requires_grad)
    eager = _outputs(op(a, m))
    with recording() as calls:
        recorded = _outputs(op(a, m))
    assert calls == (expected[requires_grad] if isinstance(expected, dict) else expected)
    for e, r in zip(eager, recorded):
        np.testing.assert_array_equal(e.numpy() if not e.requires_grad else e.detach().numpy(), r.detach().numpy())
        assert (e.grad_fn is None) == (r.grad_fn is None)
        if e.grad_fn is not None:
            assert type(e.grad_fn) is type(r.grad_fn)
            assert _node_attrs(e.grad_fn) == _node_attrs(r.grad_fn)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("m @ m", "a.sigmoid()", "a * 2.5", "a.mean()")])
def test_fast_path_node_equals_the_keyword_forms(name):
    """The node made by apply_p1/apply_p2 equals the one ``apply(prim, x, **params)`` makes."""
    op, ((prim_name, params),) = CASES[name]
    a = ember.tensor(rand(16), requires_grad=True)
    m = ember.tensor(rand(4, 4), requires_grad=True)
    fast = _outputs(op(a, m))
    x = m if name.startswith("m") else a
    general = _outputs(apply(REGISTRY[prim_name], x, **params))
    for f, g in zip(fast, general):
        np.testing.assert_array_equal(f.detach().numpy(), g.detach().numpy())
        assert (f.grad_fn is None) == (g.grad_fn is None)
        if f.grad_fn is not None:
            assert type(f.grad_fn) is type(g.grad_fn)
            assert _node_attrs(f.grad_fn) == _node_attrs(g.grad_fn)
            assert f.grad_fn.next_functions[0][0].variable is x
        assert (f._base is None) == (g._base is None)
        if f._view_of is not None:
            assert f._view_of[1] is g._view_of[1] and view_chain(f) == view_chain(g)


def test_apply_p_forms_directly():
    x = ember.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    v = apply_p1(REGISTRY["permute"], x, (1, 0))
    assert v.shape == (3, 2) and v._base is x and v.grad_fn.dims == (1, 0)
    s = apply_p2(REGISTRY["sum"], x, (1,), True)
    assert s.shape == (2, 1) and s.grad_fn.axes == (1,) and s.grad_fn.keepdim is True
    with ember.no_grad():
        assert apply_p2(REGISTRY["sum"], x, (0, 1), False).grad_fn is None
        nv = apply_p1(REGISTRY["view"], x, (6,))
    assert nv.requires_grad and nv._no_grad_view  # a view of a leaf made under no_grad, as PyTorch's
    with ember.device("meta"):
        mx = ember.empty(3, 4)
    assert apply_p2(REGISTRY["sum"], mx, (1,), False).shape == (3,)
    assert apply_p1(REGISTRY["view"], mx, (4, 3)).device.type == "meta"


def test_capture_records_fast_path_ops_once():
    with ember.device("meta"):
        a = ember.randn(16, requires_grad=True)
        m = ember.randn(4, 4, requires_grad=True)
    with capture() as g:
        loss = a.view(4, 4).t()[1].sum() + m.max(dim=1).values.mean() + (m @ m).sum(1).sum()
        loss.backward()
    counts = g.counts()
    assert counts["view"] >= 1 and counts["permute"] >= 1 and counts["getitem"] >= 1
    assert counts["max_dim"] == 1 and counts["matmul"] >= 3  # forward plus two gradient products
    views = [r for r in g.ops if r.prim.name == "view"]
    assert views[0].params == {"shape": (4, 4)}
    assert a.grad.shape == (16,) and m.grad.shape == (4, 4)


def test_profiler_sees_fast_path_ops():
    a = ember.randn(16, requires_grad=True)
    with ember.profiler.profile() as prof:
        a.view(4, 4).t()[1].sum().backward()
    table = prof.key_averages().table()
    for name in ("view", "permute", "getitem", "sum"):
        assert name in table


@pytest.mark.parametrize("shape", [(16,), (4, 4), (2, 3, 4)])
def test_sum_mean_values_and_grads(shape):
    x = rand(*shape)
    check(lambda lib, t: t.sum(), x)
    check(lambda lib, t: t.mean(), x)
    check(lambda lib, t: t.mean(), x.astype(np.float64))
    check(lambda lib, t: t.sum(-1), x)
    check(lambda lib, t: t.mean(0, keepdim=True), x)


def test_sum_mean_results_are_arrays_and_fresh():
    x = ember.ones(16)
    s = x.sum()
    assert s._data.__class__ is np.ndarray and s.shape == () and s.item() == 16
    m = x.mean()
    assert m._data.__class__ is np.ndarray and m.item() == 1.0 and x.numpy().tolist() == [1.0] * 16
    assert ember.ones(0).mean().isnan().item() and ember.ones(3, dtype=ember.int64).sum().dtype == ember.int64
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype"):
        ember.ones(3, dtype=ember.int64).mean()


@pytest.mark.parametrize(
    "shape,dims", [((16,), (4, 4)), ((16,), (-1, 8)), ((4, 4), (16,)), ((2, 8), (2, 2, 4)), ((16,), (16, 1))]
)
def test_view_reshape_fast_path(shape, dims):
    x = rand(*shape)
    check(lambda lib, t: t.view(*dims) * 2.0, x)
    check(lambda lib, t: t.reshape(*dims) * 2.0, x)
    e = ember.tensor(x)
    v = e.view(*dims)
    v.add_(1.0)  # a view: the write shows in the base
    np.testing.assert_array_equal(e.numpy().reshape(-1), (x + 1.0).reshape(-1))


def test_view_reshape_errors_as_before():
    x = ember.ones(16)
    with pytest.raises(RuntimeError, match="invalid for input of size 16"):
        x.view(5, 3)
    with pytest.raises(RuntimeError, match="invalid for input of size 16"):
        x.reshape(4, 5)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        ember.ones(4, 4).t().view(16)
    assert ember.ones(4, 4).t().reshape(16)._base is None  # a copy, as PyTorch's
    assert x.view(np.int64(4), 4).shape == (4, 4)  # NumPy integers convert


@pytest.mark.parametrize("which", ["max", "min"])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5, 2), (7,), (2, 3000)])
def test_max_min_dim_gather_matches_torch(which, shape):
    x = rand(*shape)
    x.reshape(-1)[::5] = x.reshape(-1)[0]  # ties: the first index wins
    for dim in range(-len(shape), len(shape)):
        for keepdim in (False, True):
            e = getattr(ember.tensor(x), which)(dim, keepdim)
            t = getattr(torch.tensor(x), which)(dim, keepdim)
            np.testing.assert_array_equal(e.values.numpy(), t.values.numpy())
            assert e.indices.tolist() == t.indices.tolist() and e.values.shape == t.values.shape
    check(lambda lib, t: getattr(t, which)(-1)[0] * 1.5, x)


def test_max_min_dim_special_values_and_layouts():
    x = np.array([[-0.0, 0.0, -1.0], [0.0, -0.0, -1.0], [np.nan, 1.0, np.nan], [-np.inf, np.inf, 2.0]], np.float32)
    for which in ("max", "min"):
        for src in (x, x.T, np.asfortranarray(x)):
            e = getattr(ember.tensor(src), which)(1)
            t = getattr(torch.tensor(np.ascontiguousarray(src)), which)(1)
            np.testing.assert_array_equal(e.values.numpy(), t.values.numpy())
            # the value at the index, as PyTorch: the sign of a zero too
            np.testing.assert_array_equal(np.signbit(e.values.numpy()), np.signbit(t.values.numpy()))
            assert e.indices.tolist() == t.indices.tolist()
    strided = ember.tensor(rand(4, 6))[:, ::2]
    ref = torch.tensor(strided.numpy())
    assert strided.max(1).indices.tolist() == ref.max(1).indices.tolist()
    i = ember.tensor(np.array([[3, 9, 9], [-2, -5, 7]], np.int32)).max(1)
    assert i.values.tolist() == [9, 7] and i.indices.tolist() == [1, 2] and i.values.dtype == ember.int32
    assert isinstance(ember.ones(2, 3).max(1), tuple) and ember.ones(2, 3).max(1).values.shape == (2,)


def test_scalar_operand_cache_is_exact():
    rng = np.random.default_rng(0)
    for dt in (np.float16, np.float32, np.float64):
        x = (rng.standard_normal(64) * 10).astype(dt)
        x[:4] = [0.0, -0.0, np.inf, np.nan]
        t = torch.tensor(x)
        for v in (0.1, -2.5, 3, 1e-8, 7e4, -0.0, 0.0, 1e300, float("inf"), float("nan")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with np.errstate(all="ignore"):
                    for f in (
                        lambda a, v=v: a * v,
                        lambda a, v=v: a + v,
                        lambda a, v=v: a / v,
                        lambda a, v=v: a - v,
                        lambda a, v=v: v - a,
                    ):
                        for _ in range(2):  # the second call takes the cached operand
                            got = f(ember.tensor(x)).numpy()
                            want = np.asarray(f(x))  # NumPy with the Python number: the reference
                            assert got.dtype == want.dtype
                            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
        assert str((ember.tensor(x) * 0.5).dtype).split(".")[1] == str((t * 0.5).dtype).split(".")[1]
    assert len(ew._SCALARS) <= 1024
    one = ember.ones(3)
    assert (one * -0.0).numpy().tolist() == [-0.0] * 3 and np.signbit((one * -0.0).numpy()).all()
    assert not np.signbit((one * 0.0).numpy()).any()


def test_scalar_operand_cache_is_bounded():
    x = ember.ones(2)
    for i in range(1500):
        x = x * (1.0 + i * 1e-9)
    assert len(ew._SCALARS) <= 1024


def test_sigmoid_ufunc_matches_the_numpy_forms():
    xs = np.random.default_rng(1).uniform(-110, 110, 2000).astype(np.float32)
    xs[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, -1e30]
    x64 = np.concatenate([xs.astype(np.float64), [-800.0, -745.0, 800.0, 1e-320]])
    with np.errstate(all="raise", under="ignore"):
        for arr in (xs, xs[::3], x64):
            got = ember.tensor(arr).sigmoid().numpy()
            want = ew._sigmoid_array(arr)  # the NumPy forms
            assert got.dtype == arr.dtype
            if arr.dtype == np.float32:
                np.testing.assert_array_equal(got, want)  # both computed in float64, rounded once
            else:  # libm's exp and NumPy's may differ in the last bit
                np.testing.assert_allclose(got, want, rtol=5e-16, atol=0)
    exact = 1 / (1 + np.exp(-np.clip(x64, -700, 700)))
    got = ember.tensor(x64).sigmoid().numpy()
    finite = np.isfinite(x64) & (np.abs(x64) < 700)
    np.testing.assert_allclose(got[finite], exact[finite], rtol=1e-15, atol=0)
    assert ember.tensor([-800.0], dtype=ember.float64).sigmoid().item() == pytest.approx(np.exp(-800.0), rel=1e-12)


def test_sigmoid_without_the_ufunc(monkeypatch):
    monkeypatch.setattr(ew, "_SIGMOID_UFUNC", [False])  # as with EMBER_CKERNELS=0 or no compiler
    x = rand(16, low=-30, high=30)
    check(lambda lib, t: t.sigmoid(), x, rtol=1e-6)
    check(lambda lib, t: t.sigmoid(), x.astype(np.float64))
    with pytest.raises(TypeError, match="must be Tensor"):
        ember.sigmoid(1.0)


def test_sigmoid_grad_and_other_dtypes():
    check(lambda lib, t: t.sigmoid() * 2.0, rand(16, low=-20, high=20), rtol=1e-6)
    check(lambda lib, t: t.sigmoid(), rand(16).astype(np.float16), rtol=1e-3, grad=False)
    e = ember.arange(4).sigmoid()
    assert e.dtype == ember.float32
    np.testing.assert_allclose(e.numpy(), torch.arange(4).sigmoid().numpy(), rtol=1e-7)
    with pytest.raises(TypeError, match="must be Tensor"):
        ember.sigmoid(1.0)


def test_matmul_fast_path_keeps_checks_and_autocast():
    check(lambda lib, a, b: a @ b, rand(4, 4), rand(4, 4))
    check(lambda lib, a, b: a @ b, rand(3, 4, dtype=np.float64), rand(4, 2, dtype=np.float64))
    with pytest.raises(RuntimeError, match="same dtype"):
        ember.ones(2, 2) @ ember.ones(2, 2, dtype=ember.float64)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        ember.ones(2, 3) @ ember.ones(2, 3)
    with pytest.raises(TypeError):
        ember.ones(2, 2) @ [[1.0, 0.0], [0.0, 1.0]]
    with ember.autocast("cpu", dtype=ember.bfloat16):
        assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype == ember.bfloat16
    h = ember.ones(2, 2, dtype=ember.float16)
    assert (h @ h).dtype == ember.float16 and (h @ h).numpy().tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_mean_grad_goes_through_div():
    a = ember.tensor(rand(16), requires_grad=True)
    m = a.mean()
    assert type(m.grad_fn).__name__ == "Div"
    m.backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full(16, 1 / 16, np.float32))
    assert red._ARRAY_OUT in (True, False)
