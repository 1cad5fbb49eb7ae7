"""scaled_dot_product_attention, MultiheadAttention and TransformerEncoderLayer against PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F
from tests.helpers import assert_close

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "shapes, mask, kw",
    [
        (((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)), None, {}),
        (((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 6)), None, {"is_causal": True}),
        (((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)), "bool", {}),
        (((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)), "float", {"scale": 0.3}),
        (((2, 4, 5, 4), (2, 2, 7, 4), (2, 2, 7, 6)), None, {"enable_gqa": True, "is_causal": True}),
        (((5, 4), (7, 4), (7, 6)), None, {}),
    ],
)
def test_sdpa(shapes, mask, kw):
    arrays = [RNG.standard_normal(s) for s in shapes]
    E = [ember.tensor(a, requires_grad=True) for a in arrays]
    T = [torch.tensor(a, requires_grad=True) for a in arrays]
    em = tm = None
    L, S = shapes[0][-2], shapes[1][-2]
    if mask == "bool":
        m = RNG.random((L, S)) > 0.3
        m[:, 0] = True
        em, tm = ember.tensor(m), torch.tensor(m)
    elif mask == "float":
        m = RNG.standard_normal((2, 1, L, S))
        em, tm = ember.tensor(m, requires_grad=True), torch.tensor(m, requires_grad=True)
        E.append(em)
        T.append(tm)
    eo = F.scaled_dot_product_attention(*E[:3], attn_mask=em, **kw)
    to = TF.scaled_dot_product_attention(*T[:3], attn_mask=tm, **kw)
    assert_close(eo, to.detach())
    g = RNG.standard_normal(tuple(to.shape))
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    for e, t in zip(E, T):
        assert_close(e.grad, t.grad)


def test_sdpa_double_backward_and_dropout():
    q = RNG.standard_normal((2, 3, 4))
    eq, tq = ember.tensor(q, requires_grad=True), torch.tensor(q, requires_grad=True)
    eo = F.scaled_dot_product_attention(eq, eq * 2, eq, is_causal=True)
    to = TF.scaled_dot_product_attention(tq, tq * 2, tq, is_causal=True)
    eg = ember.autograd.grad((eo**2).sum(), eq, create_graph=True)[0]
    tg = torch.autograd.grad((to**2).sum(), tq, create_graph=True)[0]
    eg.sum().backward()
    tg.sum().backward()
    assert_close(eq.grad, tq.grad)
    # dropout: rows stay finite, training noise makes two calls differ
    x = ember.randn(1, 2, 6, 4)
    a = F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)
    b = F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)
    assert np.isfinite(a.numpy()).all() and not np.allclose(a.numpy(), b.numpy())


def _load(em, tm):
    assert list(em.state_dict()) == list(tm.state_dict())
    em.load_state_dict({k: ember.tensor(v.numpy()) for k, v in tm.state_dict().items()})


@pytest.mark.parametrize(
    "kw, kpm, am, self_attn",
    [
        ({}, False, None, False),
        ({"batch_first": True}, True, "bool", False),
        ({"kdim": 5, "vdim": 3}, True, "float", False),
        ({"batch_first": True, "bias": False}, True, None, True),
    ],
)
@pytest.mark.parametrize("need_weights, average", [(True, True), (True, False), (False, True)])
def test_multihead_attention(kw, kpm, am, self_attn, need_weights, average):
    E, H, L, S, N = 8, 2 if am != "float" else 4, 4, 6, 2
    tm, em = torch.nn.MultiheadAttention(E, H, **kw).double(), ember.nn.MultiheadAttention(E, H, **kw).double()
    _load(em, tm)
    bf = kw.get("batch_first", False)
    kd, vd = kw.get("kdim") or E, kw.get("vdim") or E
    if self_attn:
        S = L
    shp = lambda t, d: (N, t, d) if bf else (t, N, d)  # noqa: E731
    arrays = [RNG.standard_normal(shp(L, E)), RNG.standard_normal(shp(S, kd)), RNG.standard_normal(shp(S, vd))]
    Ein = [ember.tensor(a, requires_grad=True) for a in arrays]
    Tin = [torch.tensor(a, requires_grad=True) for a in arrays]
    if self_attn:
        Ein, Tin = [Ein[0]] * 3, [Tin[0]] * 3
    ek, tk = {}, {}
    if kpm:
        m = RNG.random((N, S)) < 0.3
        m[:, 0] = False
        ek["key_padding_mask"], tk["key_padding_mask"] = ember.tensor(m), torch.tensor(m)
    if am == "bool":
        m = RNG.random((L, S)) < 0.3
        m[:, 1] = False
        ek["attn_mask"], tk["attn_mask"] = ember.tensor(m), torch.tensor(m)
    elif am == "float":
        m = RNG.standard_normal((N * H, L, S))
        ek["attn_mask"], tk["attn_mask"] = ember.tensor(m), torch.tensor(m)
    eo, ew = em(*Ein, need_weights=need_weights, average_attn_weights=average, **ek)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to, tw = tm(*Tin, need_weights=need_weights, average_attn_weights=average, **tk)
    assert_close(eo, to.detach())
    if need_weights:
        assert_close(ew, tw.detach())
    else:
        assert ew is None and tw is None
    g = RNG.standard_normal(tuple(to.shape))
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    for e, t in zip(Ein, Tin):
        assert_close(e.grad, t.grad)
    for name, p in tm.named_parameters():
        assert_close(em.get_parameter(name).grad, p.grad, what=name)


@pytest.mark.parametrize(
    "kw, train, stack",
    [
        ({}, False, False),
        ({"norm_first": True, "batch_first": True, "activation": "gelu"}, False, False),
        ({"dropout": 0.0, "norm_first": True}, True, False),
        ({"dropout": 0.0, "batch_first": True}, True, True),
    ],
)
def test_transformer_encoder_layer(kw, train, stack):
    kw = {"d_model": 8, "nhead": 2, "dim_feedforward": 16, **kw}
    tm, em = torch.nn.TransformerEncoderLayer(**kw).double(), ember.nn.TransformerEncoderLayer(**kw).double()
    if stack:
        tm = torch.nn.TransformerEncoder(tm, 2, enable_nested_tensor=False).double()
        em = ember.nn.TransformerEncoder(em, 2)
    _load(em, tm)
    tm.train(train)
    em.train(train)
    x = RNG.standard_normal((2, 5, 8) if kw.get("batch_first") else (5, 2, 8))
    m = RNG.random((2, 5)) < 0.3
    m[:, 0] = False
    ex, tx = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    eo = em(ex, src_key_padding_mask=ember.tensor(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to = tm(tx, src_key_padding_mask=torch.tensor(m))
    assert_close(eo, to.detach())
    g = RNG.standard_normal(tuple(to.shape))
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    assert_close(ex.grad, tx.grad)
    for name, p in tm.named_parameters():
        assert_close(em.get_parameter(name).grad, p.grad, what=name)
