"""Fusion in graphs that write in place (step graphs): in-place writes are ordering constraints
(``passes.fusion.order_edges``), so no group moves a read of some memory past a write to it or a
write past a read; whole training steps fuse and still match eager."""

import os
import sys

import numpy as np
import pytest

import ember
from ember.compile.capture import trace
from ember.compile.ir import IRGraph
from ember.compile.lower import schedule
from ember.compile.passes import fuse
from ember.compile.passes.fusion import order_edges
from tests.test_compile_cpass import nvrtc_compiles
from tests.test_compile_passes import run

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["compiler"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0",
    reason="no C compiler, or the C kernels are off (EMBER_CKERNELS=0)",
)
fusion_mod = sys.modules["ember.compile.passes.fusion"]


def graph_of(fn, *args):
    return IRGraph.from_traced(trace(fn, args, {}))


def read_write_read(p, x):
    a = p * 2  # reads p before the write
    p.add_(x)  # writes p (a placeholder: stays in place)
    b = a + p  # reads p after it
    return b.exp()


def by_op(g):
    return {n.op: n for n in g.nodes if n.kind == "call"}


def test_order_edges_put_writes_after_earlier_reads_and_reads_after_writes():
    p, x = ember.randn(3, 4), ember.randn(3, 4)
    g = graph_of(read_write_read, p, x)
    ops = by_op(g)
    edges = order_edges(g)
    assert edges == {ops["add_"]: [ops["mul"]]}  # the write waits for the read before it
    assert ops["add_"] in ops["add"].args  # the read after it reads the write's result (SSA)
    assert order_edges(graph_of(lambda p, x: (p * 2 + x).exp(), p, x)) == {}  # no writes: nothing


def test_views_and_multi_tensor_updates_are_ordered_through_the_memory_they_reach():
    def f(p, q, x):
        v = p.t()  # a view of p: a read of p's memory through it comes after the write
        ember._foreach_add_([p, q], [x, x])  # writes p and q; later readers read %p, %q again
        return (v * 2).exp(), (q * 3).exp()

    p, q, x = ember.randn(3, 3), ember.randn(3, 3), ember.randn(3, 3)
    g = graph_of(f, p, q, x)
    ops = by_op(g)
    edges = order_edges(g)
    foreach = ops["_foreach_add_"]
    assert edges[foreach] == [ops["permute"]]
    muls = [n for n in g.nodes if n.kind == "call" and n.op == "mul"]
    assert all(edges[m] == [foreach] for m in muls)


def test_fusion_refuses_a_group_that_would_move_a_read_past_an_in_place_write():
    p0, x = ember.randn(3, 4), ember.randn(3, 4)
    want = read_write_read(p0.clone(), x).numpy()
    g = graph_of(read_write_read, p0.clone(), x)
    msgs = []
    groups = fuse(g, log=msgs.append)
    assert [[n.op for n in gr.nodes] for gr in groups] == [["add", "exp"]]  # mul stays apart
    assert any("an in-place write after the group's reads" in m and "(add_)" in m for m in msgs)
    steps = schedule(g, groups)
    order = [x.op if kind == "node" else "group" for kind, x in steps]
    assert order.index("mul") < order.index("add_") < order.index("group")
    np.testing.assert_allclose(run(g, p0.clone(), x, groups=groups)[0], want, rtol=1e-6)


def test_without_the_ordering_constraints_that_fusion_reads_the_written_value(monkeypatch):
    """The constraint is what keeps the result right: ignoring it fuses mul into the group, which
    runs before the write, and ``a + p`` reads the old ``p``."""
    p0, x = ember.randn(3, 4), ember.randn(3, 4)
    want = read_write_read(p0.clone(), x).numpy()
    monkeypatch.setattr(fusion_mod, "order_edges", lambda graph: {})
    g = graph_of(read_write_read, p0.clone(), x)
    (group,) = fuse(g)
    assert [n.op for n in group.nodes] == ["mul", "add", "exp"]
    got = run(g, p0.clone(), x, groups=[group])[0]
    assert not np.allclose(got, want, rtol=1e-3)


def test_siblings_on_both_sides_of_a_write_stay_apart():
    def f(p, x):
        a = (p * 2).tanh()  # reads p before the write
        p.mul_(x)
        b = (p * 3).exp()  # reads the same p after it: no sibling of a
        return a, b

    p0, x = ember.randn(4, 5), ember.randn(4, 5)
    want = [t.numpy() for t in f(p0.clone(), x)]
    g = graph_of(f, p0.clone(), x)
    msgs = []
    groups = fuse(g, log=msgs.append)
    assert sorted([n.op for n in gr.nodes] for gr in groups) == [["mul", "exp"], ["mul", "tanh"]]
    assert not any("sibling fusion" in m for m in msgs)
    for got, w in zip(run(g, p0.clone(), x, groups=groups), want):
        np.testing.assert_allclose(got, w, rtol=1e-5)  # tanh_f32: an ulp from NumPy's


def _mlp_step(adam_cls, compiled: bool, read_after: bool):
    ember.manual_seed(0)
    m = ember.nn.Sequential(ember.nn.Linear(8, 32), ember.nn.ReLU(), ember.nn.Linear(32, 4))
    opt = adam_cls(m.parameters(), lr=1e-2)
    w = m[0].weight

    def step(x, y):
        opt.zero_grad()
        h = (w * 0.5).tanh()  # reads the weight before the update: an elementwise group
        loss = ember.nn.functional.cross_entropy(m(x), y) + (h * h).mean()
        loss.backward()
        opt.step()
        if read_after:  # reads it after the update: may not join the group above
            return loss, (w * 3).exp().mean()
        return loss

    return (ember.compile(step) if compiled else step), m


@pytest.mark.parametrize("program", ["0", "1"])
@pytest.mark.parametrize("read_after", [False, True])
@pytest.mark.parametrize("opt", ["Adam", "AdamW"])
def test_fused_training_steps_match_eager_for_twenty_steps(monkeypatch, program, read_after, opt):
    monkeypatch.setenv("EMBER_STEP_PROGRAM", program)
    cls = getattr(ember.optim, opt)
    xs = [ember.randn(16, 8) for _ in range(20)]
    ys = [ember.randint(0, 4, (16,)) for _ in range(20)]
    runs = []
    for compiled in (False, True):
        step, m = _mlp_step(cls, compiled, read_after)
        outs = [step(x, y) for x, y in zip(xs, ys)]
        runs.append((np.array([[t.item() for t in o] if isinstance(o, tuple) else [o.item()] for o in outs]), m))
        if compiled:
            entries = list(step.cache.values())
            assert all(type(e).__name__ == "StepEntry" for e in entries)
            groups = [x for e in entries for kind, x in e.steps if kind == "group"]
            assert len(groups) >= 2 * len(entries)  # linear+relu and tanh*tanh in each
            for e in entries if program == "0" else ():  # every CUDA kernel compiles (NVRTC)
                nvrtc_compiles([x for kind, x in e.steps if kind == "group"])
    (eager, me), (comp, mc) = runs
    np.testing.assert_allclose(comp, eager, rtol=1e-4)
    for a, b in zip(me.parameters(), mc.parameters()):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_step_fusion_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("EMBER_STEP_FUSION", "0")
    step, _ = _mlp_step(ember.optim.Adam, True, False)
    step(ember.randn(16, 8), ember.randint(0, 4, (16,)))
    assert all(not e.steps for e in step.cache.values())


def test_step_graphs_leave_reductions_to_eager():
    """A fused sum accumulates in double, eager's in float32: in a step graph the optimizer state
    would drift from eager's over many steps, so reductions stay eager there."""
    x = ember.randn(4, 6)
    g = graph_of(lambda x: (x * 2).exp().sum(1) * 3, x)
    msgs = []
    (group,) = fuse(g, log=msgs.append, reductions=False)
    assert [n.op for n in group.nodes] == ["mul", "exp"]
    assert any("reductions stay unfused here" in m for m in msgs)
    assert [n.op for n in fuse(graph_of(lambda x: (x * 2).exp().sum(1) * 3, x))[0].nodes][-2:] == ["sum", "mul"]


def _primitive_adam_step(compiled: bool, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """A training step whose Adam update is written with in-place primitives (no ``optim``)."""
    ember.manual_seed(0)
    m = ember.nn.Sequential(ember.nn.Linear(8, 32), ember.nn.Tanh(), ember.nn.Linear(32, 4))
    ps = list(m.parameters())
    ms = [ember.zeros_like(p) for p in ps]
    vs = [ember.zeros_like(p) for p in ps]
    b1t, b2t = ember.ones(()), ember.ones(())  # b1 ** t, b2 ** t

    def step(x, y):
        for p in ps:
            p.grad = None
        loss = ember.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        with ember.no_grad():
            b1t.mul_(b1)
            b2t.mul_(b2)
            for p, mt, vt in zip(ps, ms, vs):
                g = p.grad
                mt.mul_(b1)
                mt.add_(g * (1 - b1))
                vt.mul_(b2)
                vt.add_(g * g * (1 - b2))
                p.sub_(lr * (mt / (1 - b1t)) / ((vt / (1 - b2t)).sqrt() + eps))
        return loss

    return (ember.compile(step) if compiled else step), m, ms, vs


def test_functionalize_writes_turns_write_chains_on_placeholders_into_one_copy():
    from ember.compile.passes.functionalize import functionalize_writes

    def f(p, m, g):
        m.mul_(0.9)
        m.add_(g * 0.1)  # the chain on m: out of place, then one copy_ into m
        keep = p * 2  # p is read before its write...
        p.sub_(m)
        p.mul_(keep)  # ...and keep after it: fine (keep is its own array)
        return keep

    def g2(p, g):
        v = p.t()  # a view: the write must stay in place
        p.add_(g)
        return v * 1

    p, m, g = ember.randn(3, 3), ember.randn(3, 3), ember.randn(3, 3)
    want = [t.clone() for t in (p, m)]
    f(*want, g)
    graph = graph_of(f, p.clone(), m.clone(), g)
    assert functionalize_writes(graph) == 4
    assert graph.counts()["copy_"] == 2 and not {"mul_", "add_", "sub_"} & set(graph.counts())
    args = [p.clone(), m.clone(), g]
    run(graph, *args)
    for got, w in zip(args, want):
        np.testing.assert_allclose(got.numpy(), w.numpy(), rtol=1e-6)
    viewed = graph_of(g2, p.clone(), g)
    assert functionalize_writes(viewed) == 0 and viewed.counts()["add_"] == 1


@pytest.mark.parametrize("program", ["0", "1"])
def test_adam_written_with_primitives_fuses_and_matches_eager_for_twenty_steps(monkeypatch, program):
    monkeypatch.setenv("EMBER_STEP_PROGRAM", program)
    xs = [ember.randn(16, 8) for _ in range(20)]
    ys = [ember.randint(0, 4, (16,)) for _ in range(20)]
    (eager, me, mse, vse), (comp, mc, msc, vsc) = _primitive_adam_step(False), _primitive_adam_step(True)
    copies = []
    step_fusion = sys.modules["ember.compile.step_fusion"]
    monkeypatch.setattr(step_fusion, "apply", lambda *a, **k: copies.append(1) or ember.ops.dispatch.apply(*a, **k))
    want, got = [], []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i == 10:  # a weight in Fortran order: the update cannot write into it, so it copies
            for mod in (me, mc):
                mod[0].weight._data = np.asfortranarray(mod[0].weight._data)
            copies.clear()
        want.append(eager(x, y).item())
        got.append(comp(x, y).item())
        if i == 9 and program == "0":  # every parameter, m and v written by its update loop
            assert copies == []
    np.testing.assert_allclose(got, want, rtol=1e-4)
    if program == "0":
        assert len(copies) == 10  # the Fortran-ordered weight, steps 10..19
    for a, b in zip(list(me.parameters()) + mse + vse, list(mc.parameters()) + msc + vsc):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-6)
    (entry,) = [e for e in comp.cache.values() if e.steps]
    groups = [x for kind, x in entry.steps if kind == "group"]
    # one loop per parameter computes its new m, v and value (3 outputs), then three copies
    updates = [gr for gr in groups if len(gr.outputs) == 3 and "sqrt" in [n.op for n in gr.nodes]]
    assert len(updates) == 4
    assert entry.graph.counts()["copy_"] == 3 * 4 + 2 and "add_" not in entry.graph.counts()
    if program == "0":  # each update loop writes its parameter, m and v in place (no copy)
        into = entry.fused[0].plan.over_eager
        assert (
            sum(1 for o, d in into.items() if d.kind == "placeholder" and o in entry.graph.nodes) == 14
        )  # b1t, b2t too
