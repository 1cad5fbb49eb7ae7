"""Fusion in compiled functions, module forwards and graph-break segments that write in place
(``compile/inplace.py``): in-place writes are ordering constraints (``fusion.order_edges``), a
chain of writes to an argument or buffer becomes fused ops and one ``copy_``, and the results,
the written tensors, their version counters and gradients stay eager's."""

import copy

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.compile.capture import trace
from ember.compile.ir import IRGraph
from ember.compile.passes.mincut import min_cut_partition

HAVE_C = __import__("ember.backends.ckernels", fromlist=["get"]).get() is not None


def entries(cf):
    return list(cf.cache.values())


def chain(x, buf):
    t = x * 3
    t.mul_(2).add_(1)  # an intermediate written in place
    y = (t.exp() + 1).tanh()
    buf.mul_(0.5).add_(y.sum(0))  # an argument written in place (a running statistic)
    return (buf * 2).relu() - y


def test_a_function_writing_in_place_fuses_and_matches_eager(capsys):
    x = ember.randn(6, 5)
    b, b_eager = ember.ones(5), ember.ones(5)
    cf = ember.compile(chain, options={"explain": True})
    with ember.no_grad():
        for _ in range(3):  # the second and third calls run the cached, fused graph
            got, want = cf(x, b), chain(x, b_eager)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b.numpy(), b_eager.numpy(), rtol=1e-5)
    assert b._version == b_eager._version == 6  # two writes a call, as eager counts them
    err = capsys.readouterr().err
    assert "no fusion" not in err
    if HAVE_C:
        (entry,) = entries(cf)
        assert entry.kernels  # fused groups were built
        assert "fused group0" in err and "copy_" in err  # the buffer's chain: fused ops, one copy_


def read_write_read(p, x):
    a = p * 2  # reads p before the write
    p.add_(x)  # with gradients the write stays in place (functionalize_writes runs without them)
    return (a + p).exp()  # reads p after it


def read_copy_read(p, x):
    a = p * 2 + x  # reads p before the write (and x: the result needs x's gradient)
    p.copy_(x.detach() * 2)  # a write autograd does not record (p keeps no history): in place
    return (a + p).exp()  # reads p after it


def test_a_fusion_that_would_move_a_read_past_a_write_is_refused_and_logged(capsys):
    """With gradients (a joint graph): the read of p before the write (mul) and the read after
    it (add -> exp) stay in two groups. (``p.add_(x)`` itself would give p eager's autograd
    history, which such a call keeps by running the function: test_compile_inplace_history.py.)"""
    p0, x = ember.randn(3, 4), ember.randn(3, 4, requires_grad=True)
    x_eager = x.detach().clone().requires_grad_(True)
    cf = ember.compile(read_copy_read, options={"explain": True})
    for _ in range(2):
        p, p_eager = p0.clone(), p0.clone()
        got, want = cf(p, x), read_copy_read(p_eager, x_eager)
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(p.detach().numpy(), p_eager.detach().numpy())
        got.sum().backward()
        want.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), x_eager.grad.numpy(), rtol=1e-6)
    assert all(e.joint for e in entries(cf))  # the graph ran, with its backward
    err = capsys.readouterr().err
    if HAVE_C:
        assert "an in-place write after the group's reads" in err and "(copy_)" in err
        assert "group0[3 ops: mul -> add -> mul;" in err and "group1[2 ops: add -> exp;" in err


def test_written_arguments_that_alias_run_in_captured_order():
    def f(x, v):
        y = (x * 2).exp()  # reads x before v (a view of x) is written
        v.add_(1)
        return y, (x + 1).exp()  # and after: a sibling fusion of the two would read x once

    x, x_eager = ember.zeros(3, 4), ember.zeros(3, 4)
    cf = ember.compile(f)
    with ember.no_grad():
        for _ in range(2):
            got, want = cf(x, x[0]), f(x_eager, x_eager[0])
            for a, b in zip(got, want):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
            np.testing.assert_allclose(x.numpy(), x_eager.numpy())
        got, want = cf(x, ember.zeros(4)), f(x_eager, ember.zeros(4))  # not aliased: fused
        np.testing.assert_allclose(got[1].numpy(), want[1].numpy(), rtol=1e-6)


def test_native_writes_count_in_version_counters_so_saved_tensors_are_checked():
    def h(c):
        c.mul_(2).add_(1)
        return (c * 3).exp()

    cf = ember.compile(h)
    for _ in range(2):
        w, c = ember.ones(4, requires_grad=True), ember.ones(4)
        y = w * c  # saves c
        cf(c)
        assert c._version == 2
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)
        self.register_buffer("calls", ember.zeros(()))

    def forward(self, x):
        self.calls.add_(1)
        return ((self.bn(self.lin(x)) * 2).tanh() + 1).exp()


def test_a_module_updating_buffers_in_train_mode_fuses_and_trains_as_eager():
    ember.manual_seed(0)
    m = Counted()
    m_eager = copy.deepcopy(m)
    cm = ember.compile(m)
    for _ in range(3):
        x = ember.randn(8, 5)
        got, want = cm(x), m_eager(x)
        got.sum().backward()
        want.sum().backward()
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5)
    assert m.calls.item() == m_eager.calls.item() == 3
    np.testing.assert_allclose(m.bn.running_mean.numpy(), m_eager.bn.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.bn.running_var.numpy(), m_eager.bn.running_var.numpy(), rtol=1e-5)
    for p, q in zip(m.parameters(), m_eager.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=2e-5)
    if HAVE_C:
        (entry,) = entries(cm._compiled)
        assert entry.joint and entry.kernels  # forward and backward, fused around the writes
    m.eval()
    m_eager.eval()
    with ember.no_grad():  # eval mode: the counter still counts, the statistics are read
        x = ember.randn(8, 5)
        np.testing.assert_allclose(cm(x).numpy(), m_eager(x).numpy(), rtol=1e-5)
    assert m.calls.item() == m_eager.calls.item() == 4


def buffer_then_write(x, buf):
    y = (x + buf).tanh()  # tanh's gradient reads y: recomputed from buf it would see the write
    buf.add_(1)
    return y * 3


def test_gradients_through_a_function_writing_a_buffer_after_reading_it():
    x = ember.randn(6, requires_grad=True)
    x_eager = x.detach().clone().requires_grad_(True)
    b, b_eager = ember.full((6,), 0.5), ember.full((6,), 0.5)
    cf = ember.compile(buffer_then_write)
    for _ in range(2):
        cf(x, b).sum().backward()
        buffer_then_write(x_eager, b_eager).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x_eager.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.numpy(), b_eager.numpy())


def test_min_cut_never_recomputes_a_value_read_from_memory_written_in_place():
    x, b = ember.randn(6, requires_grad=True), ember.randn(6)
    traced = trace(buffer_then_write, (x, b), {}, joint=True)
    g = IRGraph.from_traced(traced)
    fwd, bwd, saved = min_cut_partition(g)
    recomputed = [n.op for n in bwd.nodes if n.kind == "call" and n.phase == "forward"]
    assert "add" not in recomputed  # it reads buf's memory: computed in the forward, saved
    assert [n.op for n in saved] == ["add"]

    def pure(x, b):
        return (x + b).tanh() * 3

    g = IRGraph.from_traced(trace(pure, (x, b), {}, joint=True))
    _, bwd, _ = min_cut_partition(g)
    assert "add" in [n.op for n in bwd.nodes if n.kind == "call" and n.phase == "forward"]  # recomputed


def with_break(x, buf):
    t = (x * 2).exp()
    t.mul_(3).add_(1)
    buf.mul_(0.5).add_(t.sum(0))
    y = (t + 1).tanh() * buf
    if y.sum() > 0:  # a graph break
        y = y - 1
    buf.add_(1)
    return (y * 2).relu() + buf


def test_graph_break_segments_that_write_in_place_are_fused():
    x = ember.randn(4, 5) * 0.1
    b, b_eager = ember.ones(5), ember.ones(5)
    cf = ember.compile(with_break)
    with ember.no_grad():
        for _ in range(3):
            got, want = cf(x, b), with_break(x, b_eager)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(b.numpy(), b_eager.numpy(), rtol=1e-5)
    assert b._version == b_eager._version == 9
    assert len(cf.segment_cache) == 2  # both segments compiled (cached by signature)
    if HAVE_C:
        assert all(
            any(k == "group" for k, _ in steps) for _, steps, _ in cf.segment_cache.values() if isinstance(steps, list)
        )
