"""ember.amp.GradScaler against torch.amp.GradScaler on CPU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ember


def _models(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    em, tm = ember.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    with ember.no_grad():
        em.weight.copy_(ember.tensor(w))
        em.bias.copy_(ember.tensor(b))
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(w))
        tm.bias.copy_(torch.tensor(b))
    return em, tm


def _run(mod, model, steps, bad, **kw):
    opt = mod.optim.SGD(model.parameters(), lr=0.1)
    scaler = mod.amp.GradScaler("cpu", **kw)
    x = mod.tensor(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4))
    trace = []
    for i in range(steps):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        if i in bad:
            loss = loss * float("inf")
        scaled = scaler.scale(loss)
        scaled.backward()
        if i % 3 == 0:
            scaler.unscale_(opt)
        ret = scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), ret, scaler._get_growth_tracker(), float(scaled.detach())))
    return trace, [p.detach().numpy().copy() for p in model.parameters()], scaler


def test_scale_trajectory_skipped_steps_and_params_match_torch():
    em, tm = _models()
    kw = dict(init_scale=2.0**10, growth_factor=4.0, backoff_factor=0.25, growth_interval=3)
    bad = {1, 2, 7}
    et, ep, es = _run(ember, em, 12, bad, **kw)
    tt, tp, ts = _run(torch, tm, 12, bad, **kw)
    assert [t[0] for t in et] == [t[0] for t in tt]
    assert [t[2] for t in et] == [t[2] for t in tt]
    np.testing.assert_allclose([t[3] for t in et], [t[3] for t in tt], rtol=1e-5)
    for a, b in zip(ep, tp):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert es.state_dict() == ts.state_dict()


def test_state_dict_round_trip_and_errors():
    s = ember.amp.GradScaler("cpu", init_scale=8.0, growth_interval=5)
    t = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=5)
    assert s.state_dict() == t.state_dict()
    s2 = ember.amp.GradScaler("cpu")
    s2.load_state_dict(s.state_dict())
    assert s2.get_scale() == 8.0 and s2.get_growth_interval() == 5
    with pytest.raises(RuntimeError, match="empty"):
        s2.load_state_dict({})
    m = ember.nn.Linear(2, 1)
    opt = ember.optim.SGD(m.parameters(), lr=0.1)
    s2.scale(m(ember.ones(1, 2)).sum()).backward()
    s2.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s2.unscale_(opt)
    s2.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        s2.step(opt)
    with pytest.raises(RuntimeError, match="Closure"):
        ember.amp.GradScaler("cpu").step(opt, closure=lambda: 0)
    with pytest.raises(AssertionError, match="did not use scaler.scale"):
        ember.amp.GradScaler("cpu").step(opt)


def test_fp16_grads_refused_like_torch():
    p = ember.nn.Parameter(ember.ones(2, dtype=ember.float16))
    opt = ember.optim.SGD([p], lr=0.1)
    s = ember.amp.GradScaler("cpu")
    s.scale(p.sum()).backward()
    with pytest.raises(ValueError, match="FP16"):
        s.unscale_(opt)


def test_disabled_is_passthrough():
    m = ember.nn.Linear(2, 1)
    opt = ember.optim.SGD(m.parameters(), lr=0.1)
    s = ember.amp.GradScaler("cpu", enabled=False)
    loss = m(ember.ones(1, 2)).sum()
    assert s.scale(loss) is loss
    loss.backward()
    w0 = m.weight.detach().clone()
    s.unscale_(opt)
    s.step(opt)
    s.update()
    assert not ember.equal(w0, m.weight.detach())
    assert s.get_scale() == 1.0 and s.state_dict() == {} and not s.is_enabled()


def test_cuda_spelling_without_cuda():
    if ember.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = ember.cuda.amp.GradScaler()
    msgs = " ".join(str(x.message) for x in w)
    assert "deprecated" in msgs and "CUDA is not available" in msgs and not s.is_enabled()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert not ember.cuda.amp.GradScaler(enabled=False).is_enabled()  # nanoGPT's float32 path
    assert [x.category for x in w] == [FutureWarning]
    with pytest.warns(FutureWarning):
        assert ember.cpu.amp.GradScaler().is_enabled()
