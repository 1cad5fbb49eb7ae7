"""RNN / LSTM / GRU and their cells against PyTorch (same state dict): outputs, states, all gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close

RNG = np.random.default_rng(0)


def _flat(o):
    return [z for y in o for z in _flat(y)] if isinstance(o, tuple) else [o]


def _compare(cls, args, kw, init=False, cell=False, steps=5, batch=3):
    tm = getattr(torch.nn, cls)(*args, **kw).double()
    em = getattr(ember.nn, cls)(*args, **kw).double()
    assert list(em.state_dict()) == list(tm.state_dict())
    em.load_state_dict({k: ember.tensor(v.numpy()) for k, v in tm.state_dict().items()})
    isz, hsz = args[0], args[1]
    if cell:
        x = RNG.standard_normal((batch, isz))
    else:
        x = RNG.standard_normal((batch, steps, isz) if kw.get("batch_first") else (steps, batch, isz))
    ex, tx = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    e_states, t_states = [], []
    if init:
        layers = args[2] if len(args) > 2 else kw.get("num_layers", 1)
        dirs = 2 if kw.get("bidirectional") else 1
        shape = (batch, hsz) if cell else (layers * dirs, batch, hsz)
        for _ in range(2 if cls.startswith("LSTM") else 1):
            s = RNG.standard_normal(shape)
            e_states.append(ember.tensor(s, requires_grad=True))
            t_states.append(torch.tensor(s, requires_grad=True))
    e_extra = (tuple(e_states),) if len(e_states) == 2 else tuple(e_states)
    t_extra = (tuple(t_states),) if len(t_states) == 2 else tuple(t_states)
    eo, to = _flat(em(ex, *e_extra)), _flat(tm(tx, *t_extra))
    assert len(eo) == len(to)
    for i, (e, t) in enumerate(zip(eo, to)):
        assert_close(e, t.detach(), what=f"output {i}")
    ups = [RNG.standard_normal(tuple(t.shape)) for t in to]
    ember.autograd.backward(eo, [ember.tensor(u) for u in ups])
    torch.autograd.backward(to, [torch.tensor(u) for u in ups])
    assert_close(ex.grad, tx.grad, what="input grad")
    for (name, p), (_, q) in zip(em.named_parameters(), tm.named_parameters()):
        assert_close(p.grad, q.grad, what=f"grad {name}")
    for e, t in zip(e_states, t_states):
        assert_close(e.grad, t.grad, what="initial state grad")


@pytest.mark.parametrize(
    "cls, args, kw, init",
    [
        ("LSTM", (4, 6), {}, False),
        ("LSTM", (4, 6, 2), {"batch_first": True, "bidirectional": True}, True),
        ("GRU", (4, 6, 2), {"batch_first": True, "bidirectional": True}, True),
        ("GRU", (4, 5), {"bias": False}, False),
        ("RNN", (4, 6, 2), {"nonlinearity": "relu", "bidirectional": True}, True),
        ("RNN", (4, 6, 3), {"bias": False}, False),
    ],
)
def test_recurrent(cls, args, kw, init):
    _compare(cls, args, kw, init)


@pytest.mark.parametrize("cls, kw", [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("init", [True, False])
def test_cells(cls, kw, init):
    _compare(cls, (4, 6), kw, init, cell=True)


def test_unbatched_and_names():
    tm, em = torch.nn.GRU(3, 4, bidirectional=True).double(), ember.nn.GRU(3, 4, bidirectional=True).double()
    assert [n for n, _ in em.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert "weight_hh_l0_reverse" in em.state_dict()
    bound = 1 / np.sqrt(4)
    assert all(np.abs(p.detach().numpy()).max() <= bound for p in em.parameters())
    em.load_state_dict({k: ember.tensor(v.numpy()) for k, v in tm.state_dict().items()})
    x = RNG.standard_normal((5, 3))
    eo, eh = em(ember.tensor(x))
    to, th = tm(torch.tensor(x))
    assert_close(eo, to.detach())
    assert_close(eh, th.detach())


def test_dropout_between_layers_train_only():
    m = ember.nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = ember.randn(6, 2, 3)
    m.eval()
    with ember.no_grad():
        a, b = m(x)[0], m(x)[0]
        assert np.array_equal(a.numpy(), b.numpy())
        m.train()
        ember.manual_seed(1)
        c = m(x)[0]
    assert not np.allclose(a.numpy(), c.numpy())


def test_long_sequence_backward():
    m = ember.nn.LSTM(2, 3)
    x = ember.randn(1000, 1, 2, requires_grad=True)
    out, (h, c) = m(x)
    (h.sum() + c.sum()).backward()
    assert x.grad.shape == (1000, 1, 2)
    assert np.isfinite(m.weight_hh_l0.grad.numpy()).all()


def test_cell_double_backward():
    gru_t, gru_e = torch.nn.GRUCell(3, 4).double(), ember.nn.GRUCell(3, 4).double()
    gru_e.load_state_dict({k: ember.tensor(v.numpy()) for k, v in gru_t.state_dict().items()})
    x = RNG.standard_normal((2, 3))
    ex, tx = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    eg = ember.autograd.grad((gru_e(ex) ** 2).sum(), ex, create_graph=True)[0]
    tg = torch.autograd.grad((gru_t(tx) ** 2).sum(), tx, create_graph=True)[0]
    (eg**2).sum().backward()
    (tg**2).sum().backward()
    assert_close(ex.grad, tx.grad)
    assert_close(gru_e.weight_hh.grad, gru_t.weight_hh.grad)


def test_sequence_double_backward():
    tm, em = torch.nn.LSTM(3, 4, bidirectional=True).double(), ember.nn.LSTM(3, 4, bidirectional=True).double()
    em.load_state_dict({k: ember.tensor(v.numpy()) for k, v in tm.state_dict().items()})
    x = RNG.standard_normal((4, 2, 3))
    ex, tx = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    eg = ember.autograd.grad((em(ex)[0] ** 2).sum(), ex, create_graph=True)[0]
    tg = torch.autograd.grad((tm(tx)[0] ** 2).sum(), tx, create_graph=True)[0]
    (eg**2).sum().backward()
    (tg**2).sum().backward()
    assert_close(ex.grad, tx.grad)
    assert_close(em.weight_hh_l0_reverse.grad, tm.weight_hh_l0_reverse.grad)
