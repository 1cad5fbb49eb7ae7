"""Whole-graph C programs (``ember/compile/codegen/program.py``): compiled equals eager, native
segments with eager steps between them, one arena, outputs that never alias it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ember
from bench import wl_train
from ember.compile.api import OptimizedModule
from ember.compile.arena import plan
from ember.compile.program_runtime import Program, blas

F = ember.nn.functional
pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0",  # programs call the C kernels
    reason="no C compiler, or the C kernels are off (EMBER_CKERNELS=0)",
)


def _parts(case):
    step = case.impls["ember"](ember, tiny=True)
    return dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))


def _entry(compiled):
    cf = compiled._compiled if isinstance(compiled, OptimizedModule) else compiled
    (entry,) = cf.cache.values()
    return entry


@pytest.mark.parametrize("name, eager_ops", [("mlp", []), ("gpt", []), ("lstm", [])])
def test_workload_forward_is_one_program(name, eager_ops):
    ember.manual_seed(0)
    p = _parts(getattr(wl_train, name.replace("-", "_")))
    model, x = p["model"], p["x"]
    cm = ember.compile(model)
    with ember.no_grad():
        want = model(x).numpy()
        got = cm(x).numpy()
        again = cm(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again, got)
    prog = _entry(cm).steps
    assert isinstance(prog, Program)
    assert [n.op for n in prog.spec.eager_nodes] == eager_ops
    natives = sum(1 for fn, _ in prog.plan if fn is not None)
    assert natives == len(eager_ops) + 1  # segments split only by the eager nodes


@pytest.mark.parametrize("name", ["mlp", "gpt", "lstm"])
def test_workload_forward_and_backward_match_eager(name):
    ember.manual_seed(0)
    p = _parts(getattr(wl_train, name))
    model, x, y = p["model"], p["x"], p["y"]

    def loss_of(m):
        out = m(x)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    loss = loss_of(model)
    loss.backward()
    want = {k: v.grad.numpy().copy() for k, v in model.named_parameters()}
    model.zero_grad()
    cm = ember.compile(model)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # the LSTM runs eagerly with gradients, and says so
        got_loss = loss_of(cm)
    got_loss.backward()
    assert abs(float(got_loss) - float(loss)) < 1e-5
    for k, v in model.named_parameters():
        np.testing.assert_allclose(v.grad.numpy(), want[k], rtol=1e-4, atol=1e-6, err_msg=k)
    if name == "mlp":  # the joint graph: forward and backward are both programs
        entry = _entry(cm)
        assert entry.joint and isinstance(entry.steps, Program) and isinstance(entry.bwd_steps, Program)


def test_ops_without_lowering_run_eagerly_between_segments():
    def f(x, w):
        h = F.linear(x, w).exp() * 2
        s = h.cumprod(-1)  # no C lowering
        return (s.sigmoid() + 1).sum(-1), h.permute(1, 0)

    x, w = ember.randn(5, 7), ember.randn(3, 7)
    cf = ember.compile(f)
    got = cf(x, w)
    want = f(x, w)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
    prog = _entry(cf).steps
    assert [n.op for n in prog.spec.eager_nodes] == ["cumprod"]
    assert [fn is None for fn, _ in prog.plan] == [False, True, False]


def test_results_never_alias_the_arena():
    f = ember.compile(lambda x: ((x * 2).exp() + 1).reshape(-1))
    a = f(ember.ones(4, 3))
    b = f(ember.zeros(4, 3))
    np.testing.assert_allclose(a.numpy(), np.full(12, np.exp(2) + 1), rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), np.full(12, 2.0), rtol=1e-6)


def test_views_copies_gathers_and_sums():
    def f(x, idx, table, y):
        a = x[1:, ::2].permute(1, 0)  # strided getitem, then a transposing copy
        b = ember.cat([x, x * 3], 1)[:, 2]
        e = F.embedding(idx, table)  # gather
        c = (x + y) > 0.5  # broadcasting compare, a bool result
        return a + 1, b, e.sum(0), x.sum(-1), c, x.expand(2, 4, 6) * y, F.softmax(x, -1), F.gelu(x)

    x, y = ember.randn(4, 6), ember.randn(6)
    idx, table = ember.tensor([[0, 2], [1, 1]]), ember.randn(3, 5)
    cf = ember.compile(f)
    got, want = cf(x, idx, table, y), f(x, idx, table, y)
    for g, e in zip(got, want):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
    assert _entry(cf).steps.spec.eager_nodes == []
    with pytest.raises(IndexError):
        cf(x, ember.tensor([[0, 3], [1, 1]]), table, y)


@pytest.mark.skipif(blas() is None, reason="no BLAS found")
@pytest.mark.parametrize("causal", [False, True])
def test_attention_and_linear_through_blas(causal):
    q, k, v = (ember.randn(2, 3, 5, 4, dtype=ember.float64) for _ in range(3))
    w, b = ember.randn(6, 4, dtype=ember.float64), ember.randn(6, dtype=ember.float64)

    def f(q, k, v):
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return F.linear(F.scaled_dot_product_attention(a, k, v, is_causal=causal), w, b)  # two in one segment

    cf = ember.compile(f)
    got = cf(q, k, v).numpy()
    tq, tk, tv = (torch.tensor(t.numpy()) for t in (q, k, v))
    att = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    att = torch.nn.functional.scaled_dot_product_attention(att, tk, tv, is_causal=causal)
    want = torch.nn.functional.linear(att, torch.tensor(w.numpy()), torch.tensor(b.numpy())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert _entry(cf).steps.spec.eager_nodes == []


def test_arena_plan_reuses_dead_buffers():
    offsets, size = plan([("a", 100, 0, 1), ("b", 100, 1, 2), ("c", 100, 2, 3), ("s", 10, 3, 3)])
    assert offsets["a"] != offsets["b"]  # b is written while a is read
    assert offsets["c"] == offsets["a"]  # a is dead by then
    assert size == 256 and offsets["s"] == offsets["b"] and all(o % 64 == 0 for o in offsets.values())


def test_programs_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("EMBER_PROGRAM", "0")
    cf = ember.compile(lambda x: (x * 2).exp() + 1)
    cf(ember.ones(3))
    steps = _entry(cf).steps
    assert not isinstance(steps, Program) and len(_entry(cf).kernels) == 1


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gradient_kernels_in_the_backward_program(approximate):
    ember.manual_seed(0)
    w = ember.randn(10, 8, requires_grad=True)
    lin = ember.randn(8, 8, requires_grad=True)

    def f(idx):
        e = F.embedding(idx, w, padding_idx=3)
        h = e.view(2, 5, 2, 4).transpose(1, 2).transpose(1, 2).reshape(2, 5, 8)
        return F.log_softmax(F.gelu(F.linear(h, lin), approximate=approximate), -1).sum() * 0.5

    idx = ember.tensor([[0, 3, 3, 9, 1], [1, 1, 2, 0, 3]])
    f(idx).backward()
    want = [w.grad.numpy().copy(), lin.grad.numpy().copy()]
    w.grad = lin.grad = None
    cf = ember.compile(f)
    cf(idx).backward()
    np.testing.assert_allclose(w.grad.numpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.grad.numpy(), want[1], rtol=1e-5, atol=1e-6)
    entry = _entry(cf)
    assert entry.joint and entry.steps.spec.eager_nodes == [] and entry.bwd_steps.spec.eager_nodes == []
    ops = {n.op for n in entry.graph.nodes if n.kind == "call"}
    assert {"embedding_backward", "gelu_backward", "softmax_backward", "linear_backward"} <= ops


@pytest.mark.parametrize("name", ["mlp", "gpt", "lstm"])
def test_whole_training_step_as_one_program(name, monkeypatch):
    """A captured step (compile/step.py, where it exists) runs as one native call: forward, loss,
    backward (gradient ops that read their autograd node recompute what it saved) and Adam(W)."""
    pytest.importorskip("ember.compile.step")
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")
    case = getattr(wl_train, name)

    def make():
        ember.manual_seed(0)
        step = case.impls["ember"](ember, tiny=True)
        return step, dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))

    eager_step, pe = make()
    step, pc = make()
    cs = ember.compile(step)
    for _ in range(3):
        eager_step()
        cs()
    (entry,) = cs.cache.values()
    prog = entry.program
    segments = sum(1 for fn, _ in prog.plan if fn is not None)
    eager_ops = {n.op for n in prog.spec.eager_nodes}
    assert segments == 1 and not eager_ops  # forward, loss, backward and optimizer: one native call
    for (k, a), b in zip(pe["model"].named_parameters(), pc["model"].parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
        if name == "mlp":  # GPT's key bias has a zero-up-to-rounding gradient that Adam scales to +-lr
            # atol: on many cores the sums run in another order, and Adam's m/sqrt(v) magnifies
            # the rounding of near-zero gradients (seen at 1.5e-5 on 16 threads)
            np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=4e-5, err_msg=k)


def test_in_place_writes_reach_non_contiguous_inputs():
    """Step programs write parameters in place: an input the program had to copy (non-contiguous)
    is copied back after the run, for lowered (``_foreach_add_``) and eager (``lerp_``) writes."""
    from ember.compile.capture import trace
    from ember.compile.ir import IRGraph
    from ember.compile.lower import schedule
    from ember.compile.program_runtime import build_programs

    def f(a, b):
        ember._foreach_add_([a], [1.0])
        b.lerp_(b + a.sum(), 1.0)  # no lowering for lerp_: eager, between segments
        return (a * 2).exp()

    a0, b0 = ember.randn(3, 4), ember.randn(4, 3)
    graph = IRGraph.from_traced(trace(f, (a0.clone(), b0.clone()), {}))
    (prog,), _ = build_programs([(graph, schedule(graph, []))])
    assert [n.op for n in prog.spec.eager_nodes] == ["lerp_"]
    a, b = a0.clone().t().contiguous().t(), b0.clone().t().contiguous().t()  # non-contiguous
    assert not a._data.flags.c_contiguous
    env = {n: t for n, t in zip([n for n in graph.nodes if n.kind == "placeholder"], (a, b))}
    prog.run(env)
    np.testing.assert_allclose(a.numpy(), a0.numpy() + 1, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), b0.numpy() + (a0.numpy() + 1).sum(), rtol=1e-5)
    np.testing.assert_allclose(env[graph.outputs[0]].numpy(), np.exp((a0.numpy() + 1) * 2), rtol=1e-5)


def test_copy_lowers_in_programs():
    """``copy_`` (the write a functionalized in-place chain ends with) runs natively: a same-shape
    source, a broadcast row and one element, into contiguous and non-contiguous targets."""
    from ember.compile.capture import trace
    from ember.compile.ir import IRGraph
    from ember.compile.lower import schedule
    from ember.compile.program_runtime import build_programs

    def f(a, b, c, r):
        a.copy_(a * 2 + 1)
        b.copy_(r.exp())  # (4,) broadcast over b's rows
        c.copy_(r.sum())  # one element
        return a.sum()

    a0, b0, c0, r0 = ember.randn(3, 4), ember.randn(3, 4), ember.randn(2, 4), ember.randn(4)
    graph = IRGraph.from_traced(trace(f, (a0.clone(), b0.clone(), c0.clone(), r0.clone()), {}))
    (prog,), _ = build_programs([(graph, schedule(graph, []))])
    assert not prog.spec.eager_nodes
    a, b, c = a0.clone(), b0.clone().t().contiguous().t(), c0.clone()
    env = {n: t for n, t in zip([n for n in graph.nodes if n.kind == "placeholder"], (a, b, c, r0))}
    prog.run(env)
    np.testing.assert_allclose(a.numpy(), a0.numpy() * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), np.broadcast_to(np.exp(r0.numpy()), (3, 4)), rtol=1e-6)
    np.testing.assert_allclose(c.numpy(), np.full((2, 4), r0.numpy().sum()), rtol=1e-5)


def test_explain_reports_the_program_arenas_plan(capsys):
    """With ``explain``, each program reports its arena's liveness plan: the bytes it takes and
    what its buffers would take without reuse (a chain of temporaries reuses dead buffers)."""
    f = ember.compile(lambda x: ((x.exp() @ x).relu() @ x).tanh() @ x, options={"explain": True})
    f(ember.randn(64, 64))
    out = capsys.readouterr()
    line = next(ln for ln in (out.out + out.err).splitlines() if "program:" in ln and "arena" in ln)
    words = line.replace("(", " ").split()
    arena = int(words[words.index("arena") + 1])
    naive = int(words[words.index("without") - 2])
    assert 0 < arena < naive
