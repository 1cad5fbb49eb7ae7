"""``decompose`` and ``simplify`` on graphs that write in place (a running statistic): the
composites become primitives and view chains collapse where the memory is not written, and the
compiled function still matches eager (values, the written buffer, gradients)."""

import numpy as np
import pytest

import ember
from ember.compile.capture import trace
from ember.compile.ir import IRGraph
from ember.compile.passes import dce, decompose, run_passes, simplify


def _f(x, w, buf):
    buf.mul_(0.9).add_(x.detach().mean(0) * 0.1)  # a running statistic, written in place
    y = ember.softmax(x @ w, dim=-1)
    z = ember.nn.functional.layer_norm(y, (y.shape[-1],))
    # z.t().t() collapses (z's memory is never written); buf's reshape chain stays (it is)
    return z.t().t() * 1 + buf.reshape(1, -1).reshape(-1)[: z.shape[-1]]


def _graph():
    x, w = ember.randn(4, 5), ember.randn(5, 5)
    return IRGraph.from_traced(trace(_f, (x, w, ember.zeros(5)), {}))


def test_decompose_and_simplify_change_a_graph_that_writes_in_place():
    g = _graph()
    before = g.counts()
    assert before["softmax"] == before["layer_norm"] == 1 and before["permute"] == 2
    assert decompose(g) == 2 and simplify(g) > 0 and dce(g) > 0
    after = g.counts()
    assert "softmax" not in after and "layer_norm" not in after and after["amax"] == 1
    assert "permute" not in after  # t().t(): the identity
    assert after["reshape"] == 2  # a chain over written memory: kept (a reshape may copy)
    assert after["mul_"] == after["add_"] == 1  # the writes themselves are untouched


def test_the_rewritten_primitives_keep_their_place_between_the_writes():
    g = _graph()
    run_passes(g)
    calls = [n for n in g.nodes if n.kind == "call"]
    first_write = min(i for i, n in enumerate(calls) if n.prim.inplace)
    amax = next(i for i, n in enumerate(calls) if n.op == "amax")
    assert amax > first_write  # where softmax was: after the statistic's update, in captured order


@pytest.mark.parametrize("grad", [False, True])
def test_compiled_matches_eager(grad):
    ember.manual_seed(0)
    x0, w = ember.randn(4, 5), ember.randn(5, 5)
    c = ember.compile(_f)
    b1, b2 = ember.zeros(5), ember.zeros(5)
    for _ in range(3):
        x1, x2 = x0.clone().requires_grad_(grad), x0.clone().requires_grad_(grad)
        want, got = _f(x1, w, b1), c(x2, w, b2)
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b2.numpy(), b1.numpy(), rtol=1e-6)
        if grad:
            (want * want).sum().backward()
            (got * got).sum().backward()
            np.testing.assert_allclose(x2.grad.numpy(), x1.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert b2._version == b1._version
    (entry,) = c.cache.values()
    assert "softmax" not in entry.graph.counts()  # decomposed in the compiled graph too
