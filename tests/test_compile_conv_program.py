"""Convolutions, batch norm and the SGD update inside whole-step programs
(``ember/compile/codegen/lowerings_conv.py``): a ResNet training step is one native call with no
eager op, and every lowering computes what the eager kernels compute."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

import ember
import ember.nn.functional as F
from ember.models import ResNet

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0",  # programs call the C kernels
    reason="no C compiler, or the C kernels are off (EMBER_CKERNELS=0)",
)
nn = ember.nn


@pytest.fixture(autouse=True)
def _step_programs(monkeypatch):
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")


def _program(compiled):
    entry = list(compiled.cache.values())[-1]
    prog = entry.program
    segments = sum(1 for fn, _ in prog.plan if fn is not None)
    return segments, [n.op for n in prog.spec.eager_nodes], entry


def _sync(src_model, src_opt, dst_model, dst_opt):
    """Copy parameters, buffers and optimizer state in place (the compiled step holds the objects)."""
    for a, b in zip(src_model.state_dict().values(), dst_model.state_dict().values()):
        np.copyto(b._data, a._data)
    for sa, sb in zip(src_opt.state.values(), dst_opt.state.values()):
        for k, v in sa.items():
            if hasattr(v, "_data"):
                np.copyto(sb[k]._data, v._data)


def _resnet_step(seed=0):
    ember.manual_seed(seed)
    model = ResNet(depth=8, in_channels=1, num_classes=4, widths=(4, 8, 8))
    opt = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = ember.randn(4, 1, 8, 8), ember.randint(0, 4, (4,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, model, opt


def test_resnet_step_is_one_native_segment_and_matches_eager():
    eager, m1, o1 = _resnet_step()
    fn, m2, o2 = _resnet_step()
    compiled = ember.compile(fn)
    for i in range(4):
        _sync(m1, o1, m2, o2)  # each step from the same state: no drift to hide a wrong step
        want, got = eager().item(), compiled().item()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for (k, a), b in zip(m1.named_parameters(), m2.parameters()):
            np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{i} {k}")
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):  # running stats, the update
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{i} {k}")
    segments, eager_ops, entry = _program(compiled)
    assert (segments, eager_ops) == (1, [])
    ops = entry.graph.counts()
    assert ops["conv2d"] == ops["conv2d_backward"] == 9 and ops["batch_norm_backward"] == 9
    assert "_fused_sgd_" not in ops  # SGD's update from primitives (passes/updates.py)


def _conv_step(cin, cout, k, stride, padding, dilation, bias, dtype, hw=9):
    ember.manual_seed(1)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, bias=bias).to(dtype)
    first = nn.Conv2d(2, cin, 3, 1, 1, bias=False).to(dtype)  # so the conv's input gradient is needed
    bn = nn.BatchNorm2d(cout).to(dtype)
    model = nn.Sequential(first, conv, bn)
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    x = ember.randn(3, 2, hw, hw, dtype=dtype)

    def step():
        opt.zero_grad()
        loss = (model(x) ** 2).mean()  # no relu: the batch norm runs its kernel (see below for the fused one)
        loss.backward()
        opt.step()
        return loss

    return step, model, opt


@pytest.mark.parametrize(
    "cin, cout, k, stride, padding, dilation, bias, dtype",
    [
        (4, 6, 3, 1, 1, 1, False, "float32"),
        (5, 16, 3, 2, 1, 1, True, "float32"),  # stride phases of the input gradient
        (8, 32, 1, 2, 0, 1, False, "float32"),  # strided 1x1: every stride-th pixel
        (3, 7, (3, 2), (2, 1), (0, 1), (2, 1), True, "float32"),  # dilation, rectangular kernel
        (4, 5, 3, 3, 2, 1, False, "float32"),  # stride 3: some input pixels no tap reaches
        (4, 6, 3, 1, "same", 2, True, "float64"),
    ],
)
def test_conv_and_batch_norm_lowerings_equal_eager(cin, cout, k, stride, padding, dilation, bias, dtype):
    dt = getattr(ember, dtype)
    eager, m1, o1 = _conv_step(cin, cout, k, stride, padding, dilation, bias, dt)
    fn, m2, o2 = _conv_step(cin, cout, k, stride, padding, dilation, bias, dt)
    compiled = ember.compile(fn)
    for _ in range(2):
        _sync(m1, o1, m2, o2)
        want, got = eager().item(), compiled().item()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for (name, a), b in zip(m1.named_parameters(), m2.parameters()):
            if name == "1.bias":  # g.sum((0, 2, 3)): NumPy's pairwise order vs a double accumulator,
                # of a gradient that is zero up to rounding (the batch norm removes the mean)
                atol = 1e-7 if dtype == "float32" else 1e-15
                np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-6, atol=atol, err_msg=name)
            else:  # the same hand kernels with the same packing: the same bits
                np.testing.assert_array_equal(b.grad.numpy(), a.grad.numpy(), err_msg=name)
    assert _program(compiled)[:2] == (1, [])


def test_conv_gradients_against_torch():
    """The oracle: one compiled step's gradients against PyTorch's."""
    step, model, _ = _conv_step(5, 16, 3, 2, 1, 1, True, ember.float32)
    first, conv, bn = model
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(2, 5, 3, 1, 1, bias=False), torch.nn.Conv2d(5, 16, 3, 2, 1), torch.nn.BatchNorm2d(16)
    )
    with torch.no_grad():
        for a, b in zip(tm.parameters(), model.parameters()):
            a.copy_(torch.from_numpy(b.detach().numpy().copy()))
    x = torch.from_numpy(step.__closure__[[c for c in step.__code__.co_freevars].index("x")].cell_contents.numpy())
    (tm(x) ** 2).mean().backward()
    compiled = ember.compile(step)
    compiled()
    for a, b in zip(tm.parameters(), model.parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), tm[2].running_var.numpy(), rtol=1e-5)
    assert _program(compiled)[:2] == (1, [])


def _block_step():
    """A residual block: ``relu(bn1(conv1))`` and ``relu(bn2(conv2) + shortcut)`` fold into the
    batch norms' output passes."""
    ember.manual_seed(2)
    c1, c2 = nn.Conv2d(3, 6, 3, 1, 1, bias=False), nn.Conv2d(6, 6, 3, 1, 1, bias=False)
    b1, b2 = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    short = nn.Conv2d(3, 6, 1, bias=False)
    model = nn.ModuleList([c1, c2, b1, b2, short])
    opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = ember.randn(4, 3, 6, 6)

    def step():
        opt.zero_grad()
        h = F.relu(b1(c1(x)))
        out = F.relu(short(x) + b2(c2(h)))  # the shortcut first: made before bn2's pass
        loss = (out * out).mean()
        loss.backward()
        opt.step()
        return loss

    return step, model, opt


def test_batch_norm_relu_and_residual_fold_into_one_pass():
    """Forward: each relu (and the residual add) is applied in a batch norm's output pass;
    backward: each ``mul(g, gt(out, 0))`` is one loop. Gradients match eager."""
    eager, m1, o1 = _block_step()
    fn, m2, o2 = _block_step()
    compiled = ember.compile(fn)
    for i in range(3):
        _sync(m1, o1, m2, o2)
        want, got = eager().item(), compiled().item()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        # the fused pass is not the kernel: its statistics may round differently in the last bit
        for (k, a), b in zip(m1.named_parameters(), m2.parameters()):
            np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{i} {k}")
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{i} {k}")
    segments, eager_ops, entry = _program(compiled)
    assert (segments, eager_ops) == (1, [])
    src = entry.program.spec.source
    relus = [n for n in entry.graph.nodes if n.op == "relu"]
    forward = relus + [r.args[0] for r in relus if r.args[0].op == "add"]
    assert len(forward) == 3  # relu, add, relu: none has a loop of its own in the program
    assert not any(f"/* %{n.id} = {n.op} */" in src for n in forward)
    assert src.count("= batch_norm */") == 2
    # ReLU's gradients: gt(out, 0) (and the residual's gradient add) folded into the mul's loop
    gts = [n for n in entry.graph.nodes if n.op == "gt"]
    # (an op with no code of its own: its comment in the segment's call table, with no call)
    assert len(gts) == 2 and all(re.search(rf"/\* %{n.id} = gt \*/\n\s*(/\*|\}})", src) for n in gts)


def _pool_step(mp, ap, dtype):
    ember.manual_seed(3)
    c1, c2 = nn.Conv2d(2, 4, 3, padding=1).to(dtype), nn.Conv2d(4, 4, 3, padding=1).to(dtype)
    model = nn.Sequential(c1, nn.MaxPool2d(**mp), c2, nn.AvgPool2d(**ap))
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    x = ember.randn(2, 2, 11, 11, dtype=dtype)

    def step():
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return step, model, opt


@pytest.mark.parametrize(
    "mp, ap, dtype",
    [
        (dict(kernel_size=2), dict(kernel_size=2), "float32"),
        (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2, padding=1), "float32"),
        (
            dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True),
            dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            "float64",
        ),
    ],
)
def test_pooling_lowerings_equal_eager(mp, ap, dtype):
    dt = getattr(ember, dtype)
    eager, m1, o1 = _pool_step(mp, ap, dt)
    fn, m2, o2 = _pool_step(mp, ap, dt)
    compiled = ember.compile(fn)
    for _ in range(2):
        _sync(m1, o1, m2, o2)
        want, got = eager().item(), compiled().item()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for (k, a), b in zip(m1.named_parameters(), m2.parameters()):
            np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-6, atol=1e-9, err_msg=k)
    segments, eager_ops, entry = _program(compiled)
    assert (segments, eager_ops) == (1, [])
    assert {"max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"} <= set(entry.graph.counts())


def test_in_place_updates_lower_and_match_eager():
    """``add_``/``sub_``/``mul_``/``div_`` on tensors the step keeps (counters, buffers), with
    numbers, same-shape and broadcast (trailing) tensors: in C, with eager's float32 rounding."""

    def make():
        ember.manual_seed(4)
        w = ember.randn(2, 3, requires_grad=True)
        opt = ember.optim.SGD([w], lr=0.1)
        state = {"count": ember.zeros((), dtype=ember.int64), "buf": ember.randn(2, 3), "row": ember.randn(3)}

        def step(x):
            opt.zero_grad()
            loss = (w * x).sum()
            loss.backward()
            opt.step()
            with ember.no_grad():
                state["count"].add_(1)
                state["buf"].mul_(0.9).add_(w.grad * 0.1)
                state["buf"].sub_(state["row"]).div_(3.0)
            return loss

        return step, w, state

    x = ember.randn(2, 3)
    eager, w1, s1 = make()
    fn, w2, s2 = make()
    compiled = ember.compile(fn)
    for _ in range(3):
        np.testing.assert_allclose(compiled(x).item(), eager(x).item(), rtol=1e-6)  # a sum: C's order
    for k in s1:  # the buf chain is one fused loop (step_fusion.py): the C compiler may contract it
        np.testing.assert_allclose(s2[k].numpy(), s1[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
    np.testing.assert_array_equal(w2.detach().numpy(), w1.detach().numpy())
    assert int(s2["count"].item()) == 3
    assert _program(compiled)[:2] == (1, [])
