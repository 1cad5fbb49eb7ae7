"""The eager CPU view forms (``ember/ops/dispatch_views.py``), the Node's class-level defaults and
the foreach step-count path behave as the general paths and as PyTorch.

``view``/``reshape`` and basic indexing build their view and node without the implementation's
call; each case here takes one of the branches where that form hands over to the general path
(a copy, an error, a NumPy scalar, a view of a non-leaf, no_grad, another device) and compares
values, gradients and view bookkeeping with PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.autograd.node import Node
from ember.ops.dispatch import REGISTRY
from ember.ops.dispatch_views import apply_index, apply_reshape
from ember.ops.movement import view_chain
from tests.helpers import check, rand


def test_reshape_of_a_non_contiguous_tensor_copies_as_pytorch():
    check(lambda lib, t: t.t().reshape(12) * 2.0, rand(3, 4))
    x = ember.tensor(rand(3, 4), requires_grad=True)
    r = x.t().reshape(12)
    assert r._base is None and r.grad_fn.name() == "ReshapeBackward0"


def test_view_of_non_contiguous_raises_as_before():
    x = ember.tensor(rand(3, 4)).t()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        x.view(12)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        apply_reshape(REGISTRY["view"], x, (12,))


@pytest.mark.parametrize("key", [1, -1, slice(1, 3), slice(None, 2)])
def test_basic_index_fast_form_values_grads_and_views(key):
    check(lambda lib, t: t[key] * 3.0, rand(4, 3))
    check(lambda lib, t: t[key] * 3.0, rand(5))  # 1-D: an int gives a NumPy scalar (general path)
    x = ember.tensor(rand(4, 3), requires_grad=True)
    v = x[key]
    assert v._base is x and v.grad_fn.key == (key,) and v.grad_fn.basic is True


def test_views_of_a_non_leaf_are_refreshed_after_an_inplace_write():
    for make in (lambda b: b.view(2, 6), lambda b: b.reshape(3, 4), lambda b: b[1], lambda b: b[2:5]):
        out = {}
        for lib in (ember, torch):
            w = lib.tensor(rand(12), requires_grad=True)
            base = w * 2.0
            v = make(base)
            base.mul_(3.0)  # the view must now see (and differentiate through) the write
            v.sum().backward()
            out[lib.__name__] = (v.detach().numpy().copy(), w.grad.numpy().copy())
        np.testing.assert_allclose(out["ember"][0], out["torch"][0], rtol=1e-6)
        np.testing.assert_allclose(out["ember"][1], out["torch"][1], rtol=1e-6)


def test_view_chain_and_version_counter_are_shared():
    x = ember.tensor(rand(16))
    x.add_(1.0)  # x now has a version counter; its views share it
    v = x.view(4, 4)[1]
    assert v._vc is x._vc and v._base is x
    chain = view_chain(v)
    assert [(p.name, params) for p, params in chain] == [
        ("view", {"shape": (4, 4)}),
        ("getitem", {"key": (1,), "basic": True}),
    ]
    v.mul_(2.0)
    assert x._version == v._version == 2


def test_no_grad_view_of_a_leaf_requires_grad_as_pytorch():
    for lib in (ember, torch):
        x = lib.ones(16, requires_grad=True)
        with lib.no_grad():
            v, r, i = x.view(4, 4), x.reshape(2, 8), x[2:4]
        assert v.requires_grad and r.requires_grad and i.requires_grad
        assert v.grad_fn is None and i.grad_fn is None


def test_meta_device_goes_through_the_general_path():
    with ember.device("meta"):
        x = ember.empty(4, 6)
    assert apply_reshape(REGISTRY["reshape"], x, (6, 4)).shape == (6, 4)
    assert apply_index(REGISTRY["getitem"], x, (1,)).shape == (6,)
    assert x.view(24).device.type == "meta" and x[1:3].shape == (2, 6)


def test_node_rare_attributes_are_class_defaults():
    x = ember.ones(3, requires_grad=True)
    node = (x * 2.0).grad_fn
    assert node.freed is False and node.out_hooks is None and node.retained is None
    assert node.saved_versions is None and not node.__dict__  # nothing stored per node
    grads = {}
    for lib in (ember, torch):
        x = lib.ones(3, requires_grad=True)
        y = x * 2.0
        y.retain_grad()
        y.register_hook(lambda g: g * 2)
        y.sum().backward()
        grads[lib.__name__] = (y.grad.tolist(), x.grad.tolist())
    assert grads["ember"] == grads["torch"]
    y = ember.ones(3, requires_grad=True) * 2.0
    y.register_hook(lambda g: g)
    y.sum().backward()
    assert y.grad_fn.freed is True and len(y.grad_fn.out_hooks) == 1
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()
    assert isinstance(Node().seq, int)  # a node made directly still gets its clock stamp


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_foreach_step_count_fast_path_matches_numpy(dtype):
    tdt = getattr(torch, str(dtype).split(".")[1])
    vals = [0.0, 1.0, 16777215.0, 3.0e38, -2.5, float("nan"), float("inf"), 0.1]
    for op in ("_foreach_add_", "_foreach_sub_", "_foreach_mul_"):
        for other, alpha in ((1, 1), (3, 2), (-7, 1), (1 << 24, 1)):
            es = [ember.tensor(v, dtype=dtype) for v in vals]
            ts = [torch.tensor(v, dtype=tdt) for v in vals]
            kw = {"alpha": alpha} if op != "_foreach_mul_" else {}
            with np.errstate(over="ignore"):
                getattr(ember, op)(es, other if kw else other * alpha, **kw)
            getattr(torch, op)(ts, other * alpha)  # (PyTorch's scalar form takes no alpha)
            got = np.array([e.item() for e in es])
            want = np.array([t.item() for t in ts])
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {other} {alpha}")
            assert all(e._version == 1 for e in es) and es[0].dtype == dtype


def test_foreach_step_count_fast_path_refuses_read_only():
    x = ember.tensor(1.0)
    x._data.flags.writeable = False
    with pytest.raises(RuntimeError, match="_foreach_add_"):
        ember._foreach_add_([x], 1)


def test_adam_step_counts_and_state_dict_as_pytorch():
    out = {}
    for lib in (ember, torch):
        p = lib.nn.Parameter(lib.tensor(rand(5)))
        opt = lib.optim.AdamW([p], lr=0.1, fused=True)
        for _ in range(3):
            p.grad = lib.ones(5)
            opt.step()
        sd = opt.state_dict()
        step = sd["state"][0]["step"]
        out[lib.__name__] = (p.detach().numpy().copy(), step.item(), str(step.dtype).split(".")[1], step.dim())
    assert out["ember"][1:] == out["torch"][1:]
    np.testing.assert_allclose(out["ember"][0], out["torch"][0], rtol=1e-6)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_full_mean_is_still_a_composite_under_the_profiler(requires_grad):
    from ember.profiler import profile

    x = ember.tensor(rand(16), requires_grad=requires_grad)
    with profile() as prof:
        m = x.mean()
    stats = {e.key: e for e in prof.key_averages()}
    assert stats["mean"].count == 1 and stats["sum"].count == 1
    assert stats["mean"].cpu_time_total >= stats["sum"].cpu_time_total
    np.testing.assert_allclose(m.item(), torch.tensor(rand(16)).mean().item(), rtol=1e-6)
    assert (m.grad_fn is not None) == requires_grad


@pytest.mark.parametrize("op", ["_foreach_add_", "_foreach_mul_"])
def test_foreach_writes_are_counted_and_seen_by_saved_values(op):
    """Every written tensor's version moves (one clock stamp for the op), so a node that saved one
    of them refuses to run, as in PyTorch."""
    for lib in (ember, torch):
        x = lib.ones(3, requires_grad=True)
        ws = [lib.full((3,), 2.0), lib.full((3,), 3.0), lib.tensor(4.0)]
        for w in ws:
            w.add_(0.0)  # each has a counter already (the inline path)
        y = (x * ws[1]).sum()  # saves ws[1]
        before = [w._version for w in ws]
        getattr(lib, op)(ws, 1)
        assert [w._version for w in ws] == [v + 1 for v in before]
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()
