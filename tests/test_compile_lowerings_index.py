"""The index and integer lowerings of whole-graph programs (codegen/lowerings_index.py): each op
runs natively (no eager step) and equals eager, and MoE routing's training step is one program."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ember
from bench import wl_train
from ember.compile.program_runtime import Program

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0",  # programs call the C kernels
    reason="no C compiler, or the C kernels are off (EMBER_CKERNELS=0)",
)


def _native(fn, *args):
    """``fn(*args)`` compiled (no gradients) and eagerly; asserts the program ran every op natively."""
    cf = ember.compile(fn)
    with ember.no_grad():
        got, want = cf(*args), fn(*args)
    (entry,) = cf.cache.values()
    assert isinstance(entry.steps, Program) and entry.steps.spec.eager_nodes == []
    return got, want


def _same(got, want):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g.numpy(), w.numpy())


@pytest.mark.parametrize("largest", [True, False])
def test_topk_order_ties_and_nan(largest):
    x = ember.tensor(
        [[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, -0.0, 5.0, float("nan"), 5.0], [float("nan")] * 2 + [1.0, 1.0, 0.0]]
    )
    for k in (1, 3, 5):
        _same(*_native(lambda a, k=k: a.topk(k, dim=-1, largest=largest), x))


def test_gather_scatter_and_scatter_add():
    ember.manual_seed(0)
    x = ember.randn(4, 5)
    i1 = ember.tensor([[0, 4, 4], [1, 1, 2], [3, 0, 0], [2, 2, 2]])  # along dim 1, repeats
    i0 = ember.tensor([[3, 0, 1, 1, 0], [0, 0, 2, 3, 3]])  # along dim 0
    src = ember.randn(4, 5)
    _same(*_native(lambda a, i: a.gather(1, i), x, i1))
    _same(*_native(lambda a, i: a.gather(0, i), x, i0))
    _same(*_native(lambda a, i, s: a.scatter(0, i, s), x, i0[:1], src))  # no repeats in a column
    _same(*_native(lambda a, i: a.scatter(1, i[:, :1], 7.5), x, i1))
    _same(*_native(lambda a, i, s: a.scatter_add(1, i, s), x, i1, src))
    tok = ember.tensor([4, 1, 9, 9, 0, 9])  # 9: repeated, as MoE's dropped assignments
    _same(*_native(lambda i, t: ember.zeros(10, dtype=ember.long).scatter(0, i, t), tok, tok * 3))


def test_index_select_both_axes():
    ember.manual_seed(1)
    x = ember.randn(5, 3, 4)
    idx = ember.tensor([4, 1, 0, 0, 2])
    _same(*_native(lambda a, i: a.index_select(0, i), x, idx))
    _same(*_native(lambda a, i: a.index_select(1, i), x, idx.clamp(0, 2)))


def test_index_select_gradient_accumulates_repeats():
    ember.manual_seed(2)
    x = ember.randn(6, 4, requires_grad=True)
    idx = ember.tensor([5, 0, 5, 2, 5, 0])
    w = ember.randn(6, 4)
    cf = ember.compile(lambda a, i: (a.index_select(0, i) * w).sum())
    cf(x, idx).backward()
    got = x.grad.numpy().copy()
    x.grad = None
    (x.index_select(0, idx) * w).sum().backward()
    np.testing.assert_allclose(got, x.grad.numpy(), rtol=1e-6)
    (entry,) = cf.cache.values()
    assert entry.joint and entry.bwd_steps.spec.eager_nodes == []
    assert "index_select_backward" in {n.op for n in entry.graph.nodes if n.kind == "call"}


def test_cumsum_casts_where_and_integer_arithmetic():
    ember.manual_seed(3)
    e = ember.randint(0, 4, (7, 2))
    f = ember.randn(7, 3)

    def routing(e, f):
        hot = (e.t().reshape(-1).unsqueeze(1) == ember.arange(4)).long()  # bool -> int64
        place = (hot.cumsum(0) * hot).sum(1) - 1
        dest = ember.where(place < 2, e.t().reshape(-1) * 2 + place, -place)
        return (
            dest,
            hot.sum(0),
            (f > 0).sum(1),
            -hot,
            f.cumsum(0),
            f.cumsum(1),
            ember.where(f > 0, f, 0.5),
            (e * 3).to(ember.float32),
        )

    _same(*_native(routing, e, f))


def test_index_out_of_range_raises():
    cf = ember.compile(lambda a, i: a.index_select(0, i) * 2)
    x = ember.randn(3, 2)
    with ember.no_grad():
        cf(x, ember.tensor([0, 2]))
        for bad in (3, -1):  # eager refuses negative indices too
            with pytest.raises(IndexError):
                cf(x, ember.tensor([0, bad]))


def test_moe_training_step_is_one_native_call(monkeypatch):
    """The bench's MoE-GPT step (capacity routing): forward, backward and AdamW in one C call,
    equal to eager over several steps (routing decisions included)."""
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")

    def make():
        ember.manual_seed(0)
        step = wl_train.moe_gpt.impls["ember"](ember, tiny=True)
        return step, dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))

    eager_step, pe = make()
    step, pc = make()
    cs = ember.compile(step)
    for _ in range(4):
        eager_step()
        cs()
    prog = list(cs.cache.values())[-1].program
    assert sum(1 for fn, _ in prog.plan if fn is not None) == 1 and prog.spec.eager_nodes == []
    for (k, a), b in zip(pe["model"].named_parameters(), pc["model"].parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
