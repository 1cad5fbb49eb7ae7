"""``ember.amp.custom_fwd`` / ``custom_bwd`` and autocast of the recurrent layers, against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember

rng = np.random.default_rng(0)


def _function(m, **fwd_kwargs):
    """A custom Function recording the dtypes and autocast state its forward and backward saw."""
    seen = {}

    class Scale(m.autograd.Function):
        @staticmethod
        @m.amp.custom_fwd(device_type="cpu", **fwd_kwargs)
        def forward(ctx, x, w):
            seen["fwd_in"] = (str(x.dtype).split(".")[-1], str(w.dtype).split(".")[-1])
            seen["fwd_autocast"] = m.is_autocast_enabled("cpu")
            ctx.save_for_backward(x, w)
            return x @ w

        @staticmethod
        @m.amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            seen["bwd_autocast"] = m.is_autocast_enabled("cpu")
            x, w = ctx.saved_tensors
            gx = g @ w.t()
            seen["bwd_out"] = str(gx.dtype).split(".")[-1]
            return gx, x.t() @ g

    return Scale, seen


@pytest.mark.parametrize("cast", [None, "float32", "bfloat16"])
@pytest.mark.parametrize("enabled", [True, False])
def test_custom_fwd_bwd_as_torch(cast, enabled):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    results = []
    for m in (ember, torch):
        kw = {} if cast is None else {"cast_inputs": getattr(m, cast)}
        fn, seen = _function(m, **kw)
        xt, wt = m.tensor(x, requires_grad=True), m.tensor(w, requires_grad=True)
        with m.autocast("cpu", dtype=m.bfloat16, enabled=enabled):
            out = fn.apply(xt, wt)
        out.float().sum().backward()
        results.append(
            (str(out.dtype).split(".")[-1], str(xt.grad.dtype).split(".")[-1], dict(seen), out.detach().float().numpy())
        )
    (de, ge, se, ve), (dt, gt, st, vt) = results
    assert (de, ge, se) == (dt, gt, st)
    np.testing.assert_allclose(ve, vt, rtol=1e-2, atol=1e-2)


def test_custom_fwd_errors_and_deprecated_spelling():
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        ember.amp.custom_fwd(device_type=None)
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        ember.amp.custom_bwd(lambda ctx, g: g, device_type=3)
    with pytest.warns(FutureWarning, match=r"ember.cuda.amp.custom_fwd\(args...\)` is deprecated"):
        ember.cuda.amp.custom_fwd(lambda ctx, x: x)


def _rnn_pair(name, **kw):
    mt = getattr(torch.nn, name)(4, 5, **kw)
    me = getattr(ember.nn, name)(4, 5, **kw)
    me.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in mt.state_dict().items()})
    return me, mt


def _first(o):
    return o[0] if isinstance(o, tuple) else o


@pytest.mark.parametrize(
    "name, kw",
    [
        ("LSTM", {"batch_first": True}),
        ("LSTM", {"num_layers": 2, "bidirectional": True}),
        ("GRU", {"batch_first": True}),
        ("RNN", {"batch_first": True}),
        ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
        ("LSTMCell", {}),
        ("GRUCell", {}),
        ("RNNCell", {}),
    ],
)
def test_recurrent_layers_under_cpu_autocast_as_torch(name, kw):
    # PyTorch's CPU lists: LSTM (oneDNN), RNN and RNNCell (linear ops) run in bfloat16; GRU,
    # GRUCell and LSTMCell are in no list and stay float32. Parameters' gradients are float32.
    me, mt = _rnn_pair(name, **kw)
    x = rng.standard_normal((3, 2, 4) if "Cell" not in name else (2, 4)).astype(np.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ot = mt(torch.tensor(x))
    with ember.autocast("cpu", dtype=ember.bfloat16):
        oe = me(ember.tensor(x))
    ot, oe = _first(ot), _first(oe)
    assert str(oe.dtype).split(".")[-1] == str(ot.dtype).split(".")[-1]
    np.testing.assert_allclose(oe.float().detach().numpy(), ot.float().detach().numpy(), atol=2e-2)
    ot.float().sum().backward()
    oe.float().sum().backward()
    for (k, pe), (_, pt) in zip(me.named_parameters(), mt.named_parameters()):
        assert pe.grad.dtype == ember.float32, k
        np.testing.assert_allclose(pe.grad.numpy(), pt.grad.numpy(), atol=8e-2, rtol=5e-2, err_msg=k)
