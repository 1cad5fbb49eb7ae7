"""Whole programs on a CUDA device (CuPy): training, compiled functions and checkpoints match CPU.

Marked ``gpu``; every test skips cleanly where no GPU or CuPy is present.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ember
import ember.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ember.cuda.is_available(), reason="needs a CUDA device (CuPy)"),
]


real_kernels = pytest.mark.skipif(
    bool(os.environ.get("EMBER_TEST_STRICT_CUPY")), reason="launches CUDA kernels (the stand-in has none)"
)


def _launches():
    from ember.compile.cuda_runtime import CudaKernels

    return CudaKernels.launches


def _mlp():
    ember.manual_seed(0)
    return ember.nn.Sequential(ember.nn.Linear(20, 32), ember.nn.ReLU(), ember.nn.Linear(32, 5))


def _train(device, opt_name, steps=5):
    model = _mlp().to(device)
    opt = {"adam": lambda p: ember.optim.Adam(p, lr=1e-2), "sgd": lambda p: ember.optim.SGD(p, lr=0.1, momentum=0.9)}[
        opt_name
    ](model.parameters())
    rng = np.random.default_rng(1)
    x = ember.tensor(rng.standard_normal((16, 20)).astype(np.float32), device=device)
    y = ember.tensor(rng.integers(0, 5, 16), device=device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_mlp_training_on_cuda_matches_cpu(opt_name):
    cpu, _ = _train("cpu", opt_name)
    gpu, model = _train("cuda", opt_name)
    assert all(p.device.type == "cuda" for p in model.parameters())
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)


def test_conv_net_forward_and_backward_on_cuda_match_cpu():
    ember.manual_seed(0)
    net = ember.nn.Sequential(
        ember.nn.Conv2d(3, 4, 3, padding=1), ember.nn.BatchNorm2d(4), ember.nn.ReLU(), ember.nn.MaxPool2d(2)
    )
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    outs, grads = [], []
    for device in ("cpu", "cuda"):
        net.to(device).zero_grad()
        out = net(ember.tensor(x, device=device))
        out.sum().backward()
        outs.append(out.detach().cpu().numpy())
        grads.append(net[0].weight.grad.cpu().numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_compiled_function_on_cuda_tensors_matches_eager():
    def f(x, w):
        return (F.gelu(x @ w) * 2 + 1).softmax(-1).sum()

    rng = np.random.default_rng(3)
    xs = rng.standard_normal((8, 16)).astype(np.float32)
    ws = rng.standard_normal((16, 16)).astype(np.float32)
    results = []
    for fn in (f, ember.compile(f)):
        x = ember.tensor(xs, device="cuda")
        w = ember.tensor(ws, device="cuda", requires_grad=True)
        out = fn(x, w)
        out.backward()
        assert out.device.type == "cuda" and w.grad.device.type == "cuda"
        results.append((out.item(), w.grad.cpu().numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip_from_cuda(tmp_path):
    _, model = _train("cuda", "adam", steps=2)
    path = tmp_path / "m.pt"
    ember.save(model.state_dict(), path)
    loaded = ember.load(path, map_location="cpu")
    fresh = _mlp()
    fresh.load_state_dict(loaded)
    x = ember.randn(3, 20)
    np.testing.assert_allclose(fresh(x).detach().numpy(), model(x.cuda()).detach().cpu().numpy(), rtol=1e-5, atol=1e-6)


@real_kernels
def test_compiled_inference_on_cuda_launches_fused_kernels():
    def f(x, w):
        h = (x @ w) * 0.5 + 1
        return F.softmax(h.tanh() * 3, -1) + F.layer_norm(h, (32,))

    rng = np.random.default_rng(4)
    xs, ws = rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal((48, 32)).astype(np.float32)
    x, w = ember.tensor(xs, device="cuda"), ember.tensor(ws, device="cuda")
    cf = ember.compile(f)
    before = _launches()
    with ember.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager
        got = cf(x, w)
        got = cf(x, w)
    assert _launches() > before  # the fused groups ran as CUDA kernels
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), f(ember.tensor(xs), ember.tensor(ws)).numpy(), rtol=1e-4, atol=1e-5)


@real_kernels
def test_compiled_forward_and_backward_on_cuda_launch_kernels():
    def f(x, w):
        return (F.gelu(x @ w) * 2 + 1).softmax(-1).pow(2).sum()

    rng = np.random.default_rng(5)
    xs, ws = rng.standard_normal((16, 24)).astype(np.float32), rng.standard_normal((24, 24)).astype(np.float32)
    grads = []
    before = _launches()
    for fn in (ember.compile(f), f):
        w = ember.tensor(ws, device="cuda", requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fn(ember.tensor(xs, device="cuda"), w).backward()
        grads.append(w.grad.cpu().numpy())
    assert _launches() > before
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_compiled_training_step_on_cuda_runs_eagerly_with_a_warning():
    model = _mlp().to("cuda")
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    x, y = ember.randn(8, 20, device="cuda"), ember.tensor([0, 1, 2, 3, 4, 0, 1, 2], device="cuda")

    @ember.compile
    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    with pytest.warns(UserWarning, match="CPU programs only"):
        first = step().item()
    assert step().item() < first
