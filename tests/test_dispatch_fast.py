"""The eager CPU fast forms (``ember/ops/dispatch_fast.py``, ``dispatch_views.apply_permute``,
relu's CPU implementation) and the node creation of ``apply`` give what the general path gives.

Each case runs an op twice: eagerly (the fast form) and under a pass-through mode handler, which
sends every primitive through ``dispatch.run`` (the general path). Values must agree bit for
bit, the nodes must be of one class with the same attributes and edges, and the gradients must
agree bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

import ember
from ember._mode import mode
from ember.autograd.node import Node
from ember.ops.dispatch import Primitive, run
from ember.ops.movement import view_chain
from tests.helpers import rand


@contextmanager
def general_path():
    """Every op through ``run`` (what a mode calls); yields the (name, params) of each primitive."""
    seen = []

    def handler(prim, inputs, params):
        seen.append((prim.name, dict(params)))
        return run(prim, inputs, params)

    prev, mode.handler = mode.handler, handler
    try:
        yield seen
    finally:
        mode.handler = prev


def _node_attrs(node) -> dict:
    names = [n for c in type(node).__mro__ for n in getattr(c, "__slots__", ()) if n not in ("__dict__", "__weakref__")]
    return {n: getattr(node, n) for n in names if hasattr(node, n) and n not in ("seq", "inputs", "edges")}


def _same_array(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


def _edge_kinds(node) -> list:
    return [None if e is None else type(e).__name__ if isinstance(e, Node) else "leaf" for e in node.edges]


CASES = {
    "sum()": lambda x, y: x.sum(),
    "sum(1)": lambda x, y: x.sum(1),
    "sum(-1)": lambda x, y: x.sum(-1),
    "sum(0, keepdim)": lambda x, y: x.sum(0, keepdim=True),
    "mean()": lambda x, y: x.mean(),
    "max(dim=1)": lambda x, y: x.max(dim=1),
    "min(0, keepdim)": lambda x, y: x.min(0, keepdim=True),
    "max(0) of 1-D": lambda x, y: x[0].max(0),
    "x @ y": lambda x, y: x @ y,
    "x @ y.t()": lambda x, y: x @ y.t(),
    "(x * 2) @ y": lambda x, y: (x * 2.0) @ y,
    "t()": lambda x, y: x.t(),
    "transpose(0, 1)": lambda x, y: x.transpose(0, 1),
    "permute(1, 0)": lambda x, y: x.permute(1, 0),
    "t() of a non-leaf": lambda x, y: (x * 2.0).t(),
    "view then t()": lambda x, y: x.view(4, 4).t(),
    "3-D transpose": lambda x, y: x.view(2, 2, 4).transpose(0, 2),
    "relu()": lambda x, y: x.relu(),
    "relu() of -0.0 and nan": lambda x, y: (x * ember.tensor([-0.0, float("nan"), 1.0, -1.0])).relu(),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grads", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("name", list(CASES))
def test_fast_form_matches_the_general_path(name, grads, dtype):
    op = CASES[name]
    xs, ys = rand(4, 4).astype(dtype), rand(4, 4).astype(dtype)
    results = []
    for path in ("fast", "general"):
        x = ember.tensor(xs, requires_grad=grads[0])
        y = ember.tensor(ys, requires_grad=grads[1])
        if path == "fast":
            out = op(x, y)
            seen = None
        else:
            with general_path() as seen:
                out = op(x, y)
        outs = _flat(out)
        first = outs[0]
        node = first.grad_fn
        results.append((outs, node, x, y, seen))
        if first.requires_grad:
            first.backward(ember.tensor(np.linspace(-1.0, 2.0, first.numel()).reshape(first.shape).astype(dtype)))
    (fo, fn, fx, fy, _), (go, gn, gx, gy, seen) = results
    for f, g in zip(fo, go):
        _same_array(f._data, g._data)
        assert f.requires_grad == g.requires_grad and (f._base is None) == (g._base is None)
    assert type(fn) is type(gn)
    if fn is not None:
        fa, ga = _node_attrs(fn), _node_attrs(gn)
        assert fa.keys() == ga.keys()
        for k in fa:
            if isinstance(fa[k], np.ndarray):
                _same_array(fa[k], ga[k])
            else:
                assert fa[k] == ga[k], k
        assert _edge_kinds(fn) == _edge_kinds(gn)
        assert fn.name() == gn.name()
    for f, g in ((fx, gx), (fy, gy)):
        assert (f.grad is None) == (g.grad is None)
        if f.grad is not None:
            _same_array(f.grad._data, g.grad._data)
    assert seen  # the general run went through the handler: every fast form hands over in a mode


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 7, 16, 100, 1000])
def test_mean_in_grad_mode_rounds_as_the_division(n, dtype):
    """The fast division of the sum (a Python quotient rounded once) gives NumPy's quotient."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        xs = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30)).astype(dtype)
        x = ember.tensor(xs, requires_grad=True)
        m = x.mean()
        want = np.true_divide(np.add.reduce(xs, out=...), dtype(n))
        _same_array(m._data, want)
    assert m.grad_fn.name() == "DivBackward0" and m.grad_fn.next_functions[0][0].name() == "SumBackward0"
    m.backward()
    np.testing.assert_allclose(x.grad.numpy(), torch.full((n,), 1.0 / n, dtype=getattr(torch, np.dtype(dtype).name)))


def test_permute_views_are_refreshed_and_chained_as_other_views():
    for make in (lambda b: b.t(), lambda b: b.transpose(0, 1), lambda b: b.permute(1, 0)):
        out = {}
        for lib in (ember, torch):
            w = lib.tensor(rand(3, 4), requires_grad=True)
            base = w * 2.0
            v = make(base)
            base.mul_(3.0)  # the view must now see (and differentiate through) the write
            (v * lib.tensor(rand(4, 3))).sum().backward()
            out[lib.__name__] = (v.detach().numpy().copy(), w.grad.numpy().copy())
        np.testing.assert_allclose(out["ember"][0], out["torch"][0], rtol=1e-6)
        np.testing.assert_allclose(out["ember"][1], out["torch"][1], rtol=1e-6)
    x = ember.tensor(rand(4, 4))
    x.add_(1.0)
    v = x.t()
    assert v._vc is x._vc and v._base is x
    assert [(p.name, params) for p, params in view_chain(v)] == [("permute", {"dims": (1, 0)})]
    v.mul_(2.0)
    assert x._version == v._version == 2


def test_meta_and_autocast_take_the_general_path():
    with ember.device("meta"):
        m = ember.empty(4, 4)
    assert (m @ m).device.type == "meta" and m.t().shape == (4, 4) and m.sum(1).shape == (4,)
    assert m.max(dim=1).values.shape == (4,)
    a, b = ember.tensor(rand(4, 4)), ember.tensor(rand(4, 4))
    with ember.autocast("cpu", dtype=ember.bfloat16):
        assert (a @ b).dtype == ember.bfloat16
    assert (a @ b).dtype == ember.float32


def test_a_node_class_with_its_own_init_is_refused():
    class Odd(Node):
        def __init__(self):
            super().__init__()
            self.extra = 1

    with pytest.raises(TypeError, match="may not define __init__"):
        Primitive("odd_node_test", Odd, lambda x: x._data)


def test_grad_mode_set_of_threads_with_recording_off_follows_each_thread():
    """``grad_mode.OFF_THREADS`` (what the hot paths test before the thread-local) holds exactly the
    threads with recording off; each thread still records by its own switch."""
    import threading

    from ember.autograd import grad_mode

    off = grad_mode.OFF_THREADS
    me = threading.get_ident()
    x = ember.ones(2, requires_grad=True)
    assert me not in off
    inside, release, seen = threading.Event(), threading.Event(), {}

    def other():
        with ember.no_grad():
            seen["other"] = (x * 2.0).grad_fn
            seen["id"] = threading.get_ident()
            inside.set()
            release.wait(10)

    th = threading.Thread(target=other)
    th.start()
    inside.wait(10)
    assert seen["id"] in off and me not in off
    assert (x * 2.0).grad_fn is not None and x.sum(0).grad_fn is not None  # this thread records
    assert x.t().grad_fn is not None and x.view(2, 1).grad_fn is not None
    release.set()
    th.join()
    assert seen["other"] is None and seen["id"] not in off
    with ember.no_grad():
        assert me in off and (x * 2.0).grad_fn is None and x.sum().grad_fn is None and x.t().grad_fn is None
        with ember.enable_grad():
            assert me not in off and (x @ x.view(2, 1)).grad_fn is not None
        grad_mode.state.enabled = False  # a repeated write changes nothing
        assert me in off and x.view(1, 2).grad_fn is None
    assert me not in off
    x.sum().backward()  # the engine switches recording off and back
    assert me not in off and x.grad.tolist() == [1.0, 1.0]
    grad_mode.state.enabled = None  # a falsy value switches off, as the thread-local reads it
    try:
        assert me in off and (x * 2.0).grad_fn is None
    finally:
        grad_mode.state.enabled = True
    assert me not in off


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int64])
def test_relu_cpu_implementation_matches_the_unary_one(dtype):
    from ember.ops.elementwise import _relu_cpu, _relu_impl

    vals = [-2.0, -0.0, 0.0, 3.0] + ([float("nan"), float("inf"), -float("inf")] if np.dtype(dtype).kind == "f" else [])
    x = ember.tensor(np.array(vals).astype(dtype))
    for _ in range(2):  # the first call of a dtype may fill the cache of zeros
        got, want = _relu_cpu(x), _relu_impl(x)
        _same_array(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    with pytest.raises(RuntimeError, match="Boolean inputs not supported for relu"):
        _relu_cpu(ember.tensor([True, False]))
    with pytest.raises(TypeError, match="must be Tensor"):
        ember.relu([1.0])
