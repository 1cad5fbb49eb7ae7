"""The PyTorch-oracle op table on every available device (the ``device`` fixture of conftest.py).

On cpu and cuda the values, dtypes and gradients must match torch's (CPU); on meta, which has no
data, the output and gradient shapes and dtypes must. Where an op has no implementation for a
device, it must raise ``NotImplementedError`` naming the op and the device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, rand

F32 = np.float32

# (label, fn(lib, *tensors), input arrays, differentiable)
CASES = [
    ("add", lambda L, a, b: a + b, [rand(3, 4), rand(4)], True),
    ("mul_scalar", lambda L, a: a * 2.5, [rand(3, 4)], True),
    ("div_int", lambda L, a, b: a / b, [rand(3, 4), rand(3, 4, dtype=np.int64, positive=True) + 1], True),
    ("pow", lambda L, a: a.abs() ** 1.5, [rand(5)], True),
    ("exp_log", lambda L, a: (a.exp() + 1).log(), [rand(2, 3)], True),
    ("tanh_sigmoid", lambda L, a: a.tanh() * a.sigmoid(), [rand(2, 3)], True),
    ("compare", lambda L, a, b: (a > b) & (a != 0), [rand(3), rand(3)], False),
    ("where", lambda L, a, b: L.where(a > 0, a, b), [rand(3, 4), rand(4)], True),
    ("clamp", lambda L, a: a.clamp(-0.5, 0.5), [rand(6)], True),
    ("sum_dim", lambda L, a: a.sum(1, keepdim=True), [rand(3, 4)], True),
    ("mean", lambda L, a: a.mean(), [rand(3, 4)], True),
    ("var", lambda L, a: a.var(0), [rand(5, 2)], True),
    ("amax", lambda L, a: a.amax(-1), [rand(3, 4)], True),
    ("argmax", lambda L, a: a.argmax(1), [rand(3, 4)], False),
    ("logsumexp", lambda L, a: a.logsumexp(0), [rand(3, 4)], True),
    ("cumsum", lambda L, a: a.cumsum(1), [rand(3, 4)], True),
    ("matmul", lambda L, a, b: a @ b, [rand(2, 3, 4), rand(4, 5)], True),
    ("reshape_permute", lambda L, a: a.reshape(4, 6).t().contiguous(), [rand(2, 3, 4)], True),
    ("expand", lambda L, a: a.expand(3, 4, 5), [rand(4, 1)], True),
    ("cat_stack", lambda L, a, b: L.stack([L.cat([a, b], 0), L.cat([b, a], 0)]), [rand(2, 3), rand(2, 3)], True),
    ("getitem", lambda L, a: a[1:, ::2] * 2, [rand(3, 4)], True),
    ("index_select", lambda L, a: a.index_select(0, L.tensor([2, 0, 2])), [rand(3, 4)], True),
    ("gather", lambda L, a: a.gather(1, L.tensor([[0, 1], [2, 0], [1, 1]])), [rand(3, 4)], True),
    ("flip_roll", lambda L, a: a.flip(0).roll(1, 1), [rand(3, 4)], True),
    ("tril", lambda L, a: a.tril(), [rand(4, 4)], True),
    ("to_float64", lambda L, a: a.to(L.float64) * 2, [rand(3)], True),
    ("softmax", lambda L, a: L.nn.functional.softmax(a, -1), [rand(2, 5)], True),
    ("log_softmax", lambda L, a: L.nn.functional.log_softmax(a, 0), [rand(2, 5)], True),
    ("gelu", lambda L, a: L.nn.functional.gelu(a), [rand(2, 5)], True),
    ("layer_norm", lambda L, a, w, b: L.nn.functional.layer_norm(a, (5,), w, b), [rand(2, 5), rand(5), rand(5)], True),
    ("linear", lambda L, a, w, b: L.nn.functional.linear(a, w, b), [rand(2, 3, 4), rand(5, 4), rand(5)], True),
    ("conv2d", lambda L, a, w: L.nn.functional.conv2d(a, w, padding=1), [rand(2, 3, 6, 6), rand(4, 3, 3, 3)], True),
    ("max_pool2d", lambda L, a: L.nn.functional.max_pool2d(a, 2), [rand(1, 2, 4, 4)], True),
    ("avg_pool2d", lambda L, a: L.nn.functional.avg_pool2d(a, 2), [rand(1, 2, 4, 4)], True),
    (
        "batch_norm",
        lambda L, a, w, b: L.nn.functional.batch_norm(a, None, None, w, b, training=True),
        [rand(4, 3, 2, 2), rand(3), rand(3)],
        True,
    ),
    (
        "sdpa",
        lambda L, q, k, v: L.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        [rand(2, 2, 4, 8), rand(2, 2, 4, 8), rand(2, 2, 4, 8)],
        True,
    ),
    (
        "cross_entropy",
        lambda L, a: L.nn.functional.cross_entropy(a, L.tensor([1, 0, 3])),
        [rand(3, 4)],
        True,
    ),
    ("embedding", lambda L, w: L.nn.functional.embedding(L.tensor([[0, 2], [1, 1]]), w), [rand(3, 4)], True),
]


def _ember_inputs(arrays, device, grad):
    out = []
    for a in arrays:
        t = ember.tensor(a, device=device)
        if grad and a.dtype.kind == "f":
            t.requires_grad_()
        out.append(t)
    return out


def _on(device):
    """``lib.tensor`` on ``device`` inside the op functions (index tensors they make)."""
    return ember.device(device)


@pytest.mark.parametrize("label,fn,arrays,grad", CASES, ids=[c[0] for c in CASES])
def test_op_on_device_matches_torch(device, label, fn, arrays, grad):
    t_in = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    t_out = fn(torch, *t_in)
    e_in = _ember_inputs(arrays, device, grad)
    with _on(device):
        e_out = fn(ember, *e_in)
    assert e_out.device.type == device
    assert tuple(e_out.shape) == tuple(t_out.shape), label
    assert str(e_out.dtype).split(".")[-1] == str(t_out.dtype).split(".")[-1], label
    if device != "meta":
        assert_close(e_out.cpu(), t_out, what=label)
    if not grad:
        return
    seed = rand(*t_out.shape) if t_out.dim() else np.asarray(rand(1)[0])
    t_out.backward(torch.tensor(seed, dtype=t_out.dtype))
    with _on(device):
        e_out.backward(ember.tensor(seed, device=device, dtype=e_out.dtype))
    for i, (e, t) in enumerate(zip(e_in, t_in)):
        if t.grad is None:
            continue
        assert e.grad is not None and e.grad.device.type == device, f"{label}: grad {i}"
        assert tuple(e.grad.shape) == tuple(t.grad.shape) and e.grad.dtype == e.dtype, f"{label}: grad {i}"
        if device != "meta":
            assert_close(e.grad.cpu(), t.grad, what=f"{label}: grad {i}")


def test_missing_implementation_names_op_and_device(device):
    x = ember.tensor([1.0, 0.0, 2.0], device=device)
    if device == "meta":
        with pytest.raises(NotImplementedError, match="'nonzero'.*'meta'"):
            x.nonzero()
    else:
        assert x.nonzero().cpu().tolist() == [[0], [2]]
