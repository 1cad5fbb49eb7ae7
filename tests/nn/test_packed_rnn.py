"""``ember.nn.utils.rnn`` (padding, packing) and RNN/LSTM/GRU on packed input, against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.rnn as trnn

import ember
import ember.nn.utils.rnn as ernn


def _np(x):
    return x.detach().numpy()


def _close(e, t, tol=1e-5):
    assert tuple(e.shape) == tuple(t.shape)
    assert str(e.dtype).split(".")[1] == str(t.dtype).split(".")[1]
    np.testing.assert_allclose(_np(e), _np(t), rtol=tol, atol=tol)


def _seqs(lengths, feat=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, feat)).astype(np.float32) for n in lengths]
    es = [ember.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    return es, ts


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequence(batch_first, side):
    es, ts = _seqs([2, 4, 1])
    pe = ernn.pad_sequence(es, batch_first=batch_first, padding_value=-1.5, padding_side=side)
    pt = trnn.pad_sequence(ts, batch_first=batch_first, padding_value=-1.5, padding_side=side)
    _close(pe, pt)
    w = np.random.default_rng(1).standard_normal(tuple(pt.shape)).astype(np.float32)
    (pe * ember.tensor(w)).sum().backward()
    (pt * torch.tensor(w)).sum().backward()
    for e, t in zip(es, ts):
        _close(e.grad, t.grad)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pack_pad_round_trip(enforce_sorted, batch_first):
    lengths = [4, 3, 1] if enforce_sorted else [2, 4, 1, 3]
    es, ts = _seqs(lengths)
    xe = ernn.pad_sequence(es, batch_first=batch_first)
    xt = trnn.pad_sequence(ts, batch_first=batch_first)
    pe = ernn.pack_padded_sequence(xe, ember.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted)
    pt = trnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted)
    _close(pe.data, pt.data)
    assert pe.batch_sizes.tolist() == pt.batch_sizes.tolist() and pe.batch_sizes.dtype == ember.int64
    for a, b in ((pe.sorted_indices, pt.sorted_indices), (pe.unsorted_indices, pt.unsorted_indices)):
        assert (a is None and b is None) or a.tolist() == b.tolist()
    ue, le = ernn.pad_packed_sequence(pe, batch_first=batch_first, padding_value=9.0, total_length=6)
    ut, lt = trnn.pad_packed_sequence(pt, batch_first=batch_first, padding_value=9.0, total_length=6)
    _close(ue, ut)
    assert le.tolist() == lt.tolist() and le.dtype == ember.int64
    w = np.random.default_rng(2).standard_normal(tuple(ut.shape)).astype(np.float32)
    (ue * ember.tensor(w)).sum().backward()
    (ut * torch.tensor(w)).sum().backward()
    for e, t in zip(es, ts):
        _close(e.grad, t.grad)
    for e, t in zip(ernn.unpack_sequence(pe), trnn.unpack_sequence(pt)):
        _close(e, t)
    for e, t in zip(ernn.unpad_sequence(ue, le, batch_first), trnn.unpad_sequence(ut, lt, batch_first)):
        _close(e, t)


def test_pack_sequence_and_packed_methods():
    es, ts = _seqs([1, 3, 2])
    pe, pt = ernn.pack_sequence(es, enforce_sorted=False), trnn.pack_sequence(ts, enforce_sorted=False)
    _close(pe.data, pt.data)
    assert isinstance(pe, tuple) and pe._fields == pt._fields
    assert pe.to(ember.float64).data.dtype == ember.float64 and pe.double().data.dtype == ember.float64
    assert pe.float().data.dtype == ember.float32 and pe.to(ember.float32) is pe and not pe.is_cuda
    d, bs, si, ui = pe
    assert d is pe.data and bs is pe.batch_sizes and si is pe.sorted_indices and ui is pe.unsorted_indices


def test_packing_errors_match_torch():
    for lib, mod in ((ember, ernn), (torch, trnn)):
        seqs = [lib.ones(3, 2), lib.ones(1, 2), lib.ones(2, 2)]
        with pytest.raises(RuntimeError, match="sorted in decreasing order"):
            mod.pack_sequence(seqs)
        with pytest.raises(RuntimeError, match="greater than 0"):
            mod.pack_padded_sequence(lib.ones(3, 2, 1), [3, 0])
        with pytest.raises(RuntimeError, match="equal to batch_size"):
            mod.pack_padded_sequence(lib.ones(3, 2, 1), [3])
        with pytest.raises(ValueError, match="total_length"):
            mod.pad_packed_sequence(mod.pack_sequence(seqs, enforce_sorted=False), total_length=2)
        with pytest.raises(RuntimeError, match="padding_side"):
            mod.pad_sequence(seqs, padding_side="middle")
        with pytest.raises(RuntimeError, match="empty list"):
            mod.pad_sequence([])
    with pytest.raises(RuntimeError, match="exceeds"):  # torch reads past the end here
        ernn.pack_padded_sequence(ember.ones(3, 2, 1), [4, 1])


def _pair_modules(cls, **kw):
    tm = getattr(torch.nn, cls)(3, 4, **kw)
    em = getattr(ember.nn, cls)(3, 4, **kw)
    em.load_state_dict({k: ember.tensor(_np(v)) for k, v in tm.state_dict().items()})
    return em, tm


def _as_list(h):
    return list(h) if isinstance(h, tuple) else [h]


CONFIGS = [
    ("LSTM", dict()),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(num_layers=2)),
    ("GRU", dict(bidirectional=True, bias=False)),
    ("RNN", dict(nonlinearity="relu", bidirectional=True)),
    ("RNN", dict(batch_first=True)),
]


@pytest.mark.parametrize("cls,kw", CONFIGS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_rnn_on_packed_input_values_and_grads(cls, kw, enforce_sorted, with_hx):
    em, tm = _pair_modules(cls, **kw)
    lengths = [5, 3, 3, 1] if enforce_sorted else [2, 5, 1, 3]
    es, ts = _seqs(lengths)
    pe = ernn.pack_sequence(es, enforce_sorted=enforce_sorted)
    pt = trnn.pack_sequence(ts, enforce_sorted=enforce_sorted)
    he = ht = None
    if with_hx:
        layers = tm.num_layers * (2 if tm.bidirectional else 1)
        rng = np.random.default_rng(5)
        arrays = [
            rng.standard_normal((layers, len(lengths), 4)).astype(np.float32) for _ in range(2 if cls == "LSTM" else 1)
        ]
        he = [ember.tensor(a, requires_grad=True) for a in arrays]
        ht = [torch.tensor(a, requires_grad=True) for a in arrays]
    oe, hne = em(pe, None if he is None else (tuple(he) if cls == "LSTM" else he[0]))
    ot, hnt = tm(pt, None if ht is None else (tuple(ht) if cls == "LSTM" else ht[0]))
    assert isinstance(oe, ernn.PackedSequence)
    _close(oe.data, ot.data)
    assert oe.batch_sizes.tolist() == ot.batch_sizes.tolist()
    for a, b in zip(_as_list(hne), _as_list(hnt)):
        _close(a, b)
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in [ot.data] + _as_list(hnt)]
    loss_e = sum((x * ember.tensor(w)).sum() for x, w in zip([oe.data] + _as_list(hne), weights))
    loss_t = sum((x * torch.tensor(w)).sum() for x, w in zip([ot.data] + _as_list(hnt), weights))
    loss_e.backward()
    loss_t.backward()
    for e, t in zip(es, ts):
        _close(e.grad, t.grad, 1e-4)
    for (name, p), (tname, q) in zip(em.named_parameters(), tm.named_parameters()):
        assert name == tname
        _close(p.grad, q.grad, 1e-4)
    for e, t in zip(he or [], ht or []):
        _close(e.grad, t.grad, 1e-4)


def test_packed_output_pads_back_to_unpacked_run():
    # A full-length batch packed must give exactly the unpacked module's output.
    em, _ = _pair_modules("LSTM", bidirectional=True)
    x = ember.randn(4, 2, 3)
    out, (h, c) = em(x)
    pout, (ph, pc) = em(ernn.pack_padded_sequence(x, [4, 4]))
    padded, _ = ernn.pad_packed_sequence(pout)
    np.testing.assert_allclose(_np(padded), _np(out), atol=1e-6)
    np.testing.assert_allclose(_np(ph), _np(h), atol=1e-6)


def test_flatten_parameters_is_a_noop():
    em, tm = _pair_modules("LSTM")
    before = {k: _np(v).copy() for k, v in em.state_dict().items()}
    assert em.flatten_parameters() is None and tm.flatten_parameters() is None
    assert all(np.array_equal(before[k], _np(v)) for k, v in em.state_dict().items())
