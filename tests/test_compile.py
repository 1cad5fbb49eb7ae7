"""ember.compile end to end: compiled == eager (values, gradients), guards and recompiles,
fallbacks, the Module wrapper, the kernel cache. PyTorch is the oracle for the primitive table."""

import warnings

import numpy as np
import pytest
import torch

import ember
from ember.compile import RECOMPILE_LIMIT, CompileError
from ember.models import GPT, MLP, GPTConfig

UNARY = {
    "exp": lambda m, x: m.exp(x),
    "log": lambda m, x: m.log(x.abs() + 0.5),
    "tanh": lambda m, x: m.tanh(x),
    "sigmoid": lambda m, x: m.sigmoid(x),
    "relu": lambda m, x: m.relu(x),
    "sqrt": lambda m, x: m.sqrt(x.abs()),
    "rsqrt": lambda m, x: m.rsqrt(x.abs() + 0.1),
    "neg_abs": lambda m, x: -m.abs(x),
    "sin_cos": lambda m, x: m.sin(x) * m.cos(x),
    "expm1_log1p": lambda m, x: m.expm1(x) + m.log1p(x.abs()),
    "reciprocal": lambda m, x: m.reciprocal(x.abs() + 1),
    "pow": lambda m, x: m.pow(x, 3) - x / 2,
    "max_min": lambda m, x: m.maximum(x, x * 2) + m.minimum(x, 1 - x),
    "scalars": lambda m, x: (2 - x) * 3 + 1 / (x * x + 1),
}


def _chain(name):
    op = UNARY[name]
    return lambda m, x: op(m, x * 1.5 + 0.25) * 0.5 + x  # long enough to fuse


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_primitive_table_matches_torch(name, dtype):
    f = _chain(name)
    xn = np.random.default_rng(0).standard_normal((33, 65)).astype(dtype)
    cf = ember.compile(lambda x: f(ember, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback allowed
        got = cf(ember.tensor(xn))
    want = f(torch, torch.tensor(xn)).numpy()
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    assert got.dtype == getattr(ember, dtype)
    assert cf.cache and len(next(iter(cf.cache.values())).kernels) == 1  # it ran as one fused kernel


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "scalars", "max_min", "pow"])
def test_primitive_gradients_match_torch(name):
    f = _chain(name)
    xn = np.random.default_rng(1).standard_normal((7, 9))
    x = ember.tensor(xn, requires_grad=True)
    y = ember.compile(lambda x: f(ember, x))(x)
    y.sum().backward()
    xt = torch.tensor(xn, requires_grad=True)
    f(torch, xt).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), f(torch, xt).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_special_values_follow_math():
    x = ember.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -1.0])
    got = ember.compile(lambda x: (x * 2).relu() + 0.0 * x.exp())(x).numpy()
    assert np.isnan(got[0]) and np.isnan(got[1])  # nan propagates; inf + 0*inf is nan
    np.testing.assert_array_equal(got[2:], [0.0, 0.0, 0.0])
    got = ember.compile(lambda x: ember.maximum(x, x * 0) + 1)(x).numpy()  # inf * 0 is nan
    np.testing.assert_array_equal(got, [np.nan, np.nan, np.nan, 1.0, 1.0])
    got = ember.compile(lambda x: ember.minimum(x, x - x + 5) * 2)(x[3:]).numpy()
    np.testing.assert_array_equal(got, [0.0, -2.0])


def test_mlp_eval_train_and_gradients():
    m = MLP(in_features=12, hidden=(16, 8), num_classes=3)
    cm = ember.compile(m)
    x = ember.randn(5, 12)
    for train in (False, True):
        cm.train(train)
        assert m.training is train
        ember.manual_seed(3)
        a = cm(x)
        ember.manual_seed(3)
        b = m(x)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)
    a.square().sum().backward()
    g1 = [p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    b.square().sum().backward()
    for u, p in zip(g1, m.parameters()):
        np.testing.assert_allclose(u, p.grad.numpy(), rtol=1e-6)
    assert len(cm._compiled.cache) == 2  # one graph per module.training value


def test_optimized_module_wrapper():
    m = MLP(in_features=4, hidden=(6,), num_classes=2)
    cm = ember.compile(m)
    assert all(k.startswith("_orig_mod.") for k in cm.state_dict())
    assert set(cm.state_dict()) == {"_orig_mod." + k for k in m.state_dict()}
    assert cm._orig_mod is m
    assert [id(p) for p in cm.parameters()] == [id(p) for p in m.parameters()]
    assert cm.net is m.net  # attributes forward to the original module
    cm.eval()
    assert not m.training


def test_small_gpt_compiled_matches_eager():
    cfg = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16)
    g = GPT(cfg)
    cg = ember.compile(g)
    idx = ember.randint(0, 16, (2, 8))
    tgt = ember.randint(0, 16, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole forward is captured: no fallback
        logits, loss = cg(idx, tgt)
    logits2, loss2 = g(idx, tgt)
    np.testing.assert_allclose(logits.detach().numpy(), logits2.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.item(), loss2.item(), rtol=1e-6)
    loss.backward()
    grads = [p.grad.numpy().copy() for p in g.parameters()]
    g.zero_grad()
    loss2.backward()
    for u, p in zip(grads, g.parameters()):
        np.testing.assert_allclose(u, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_recompile_on_shape_change_and_cache_reuse():
    cf = ember.compile(lambda x: (x + 1).tanh() * 2)
    for n in (3, 4, 3, 4):
        x = ember.randn(n)
        np.testing.assert_allclose(cf(x).numpy(), ((x + 1).tanh() * 2).numpy(), rtol=1e-6)
    assert cf.recompiles == 2 and len(cf.cache) == 2
    cf(ember.randn(3, dtype=ember.float64))
    cf(ember.randn(3, requires_grad=True))
    assert cf.recompiles == 4


def test_recompile_limit_falls_back_to_eager(caplog):
    cf = ember.compile(lambda x: x * 2 + 1, dynamic=False)  # every size specializes
    for n in range(1, RECOMPILE_LIMIT + 3):
        np.testing.assert_allclose(cf(ember.ones(n)).numpy(), np.full(n, 3.0))
    assert cf.recompiles == RECOMPILE_LIMIT
    assert "recompile limit" in caplog.text


def test_grad_mode_and_parameter_guards():
    w = ember.randn(4, requires_grad=True)
    cf = ember.compile(lambda x: (x * w).exp() + 1)
    x = ember.randn(4)
    with ember.no_grad():
        assert not cf(x).requires_grad
    y = cf(x)
    assert y.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), (x * w).exp().detach().numpy() * x.numpy(), rtol=1e-6)
    with ember.no_grad():
        w.mul_(2)  # the new value is read on the next call, no recompile needed
    np.testing.assert_allclose(cf(x).detach().numpy(), ((x * w).exp() + 1).detach().numpy(), rtol=1e-6)


# Data-dependent Python (graph breaks): tests/test_compile_breaks.py


def test_fullgraph_raises_naming_reason_and_line():
    def f(x):
        return x * 2 if x.sum().item() > 0 else x

    with pytest.raises(CompileError, match=r"item\(\).*test_compile.py:\d+"):
        ember.compile(f, fullgraph=True)(ember.randn(3))


def test_backward_inside_is_captured_with_grad_accumulation():
    w = ember.randn(3, requires_grad=True)

    def step(x):
        loss = (x * w).tanh().sum()
        loss.backward()
        return loss

    step_c = ember.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step_c(ember.ones(3))
        (entry,) = step_c.cache.values()
        assert type(entry).__name__ == "StepEntry"
        np.testing.assert_allclose(w.grad.numpy(), (1 - np.tanh(w.detach().numpy()) ** 2), rtol=1e-6)
        step_c(ember.ones(3))  # .grad exists now: a second graph accumulates into it in place
        g = w.grad
        step_c(ember.ones(3))
    assert w.grad is g and step_c.recompiles == 2
    np.testing.assert_allclose(w.grad.numpy(), 3 * (1 - np.tanh(w.detach().numpy()) ** 2), rtol=1e-6)


def test_no_compiler_falls_back(monkeypatch):
    from ember.backends import ckernels

    monkeypatch.setattr(ckernels, "compiler", lambda: None)
    cf = ember.compile(lambda x: (x * 3).exp() - 1)
    x = ember.randn(5)
    with pytest.warns(UserWarning, match="no C compiler"):
        got = cf(x)
    np.testing.assert_allclose(got.numpy(), ((x * 3).exp() - 1).numpy(), rtol=1e-6)


def test_compile_error_falls_back(monkeypatch):
    from ember.compile import program_runtime, runtime

    monkeypatch.setattr(runtime, "render_c", lambda groups: "this is not C;")
    monkeypatch.setattr(program_runtime, "render_kernels", lambda groups: ("this is not C;", "", {}))
    cf = ember.compile(lambda x: (x * 3).exp() - 1)
    x = ember.randn(5)
    with pytest.warns(UserWarning, match="C compiler failed"):
        got = cf(x)
    np.testing.assert_allclose(got.numpy(), ((x * 3).exp() - 1).numpy(), rtol=1e-6)


def test_eager_backend_decorator_and_disable():
    @ember.compile(backend="eager")
    def f(x):
        return (x * 2).sigmoid() + 1

    x = ember.randn(4)
    np.testing.assert_allclose(f(x).numpy(), ((x * 2).sigmoid() + 1).numpy())
    assert next(iter(f.cache.values())).kernels == {}
    g = lambda x: x  # noqa: E731
    assert ember.compile(g, disable=True) is g


def test_bad_arguments():
    with pytest.raises(RuntimeError, match="Unrecognized mode"):
        ember.compile(lambda x: x, mode="fastest")
    with pytest.raises(RuntimeError, match="Either mode or options"):
        ember.compile(lambda x: x, mode="default", options={})
    with pytest.raises(ValueError, match="unknown backend"):
        ember.compile(lambda x: x, backend="tvm")


def test_kernel_cache_on_disk_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    x = ember.randn(6)
    ember.compile(lambda x: (x * 5).tanh() + 2)(x)
    files = sorted(tmp_path.glob("compiled-*.so"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    ember.compile(lambda x: (x * 5).tanh() + 2)(x)  # a new function, same source: no rebuild
    assert sorted(tmp_path.glob("compiled-*.so")) == files and files[0].stat().st_mtime_ns == stamp
    # A corrupt entry is rebuilt (in a second cache folder: the loaded library must stay intact).
    other = tmp_path / "other"
    other.mkdir()
    (other / files[0].name).write_bytes(b"corrupt")
    monkeypatch.setenv("EMBER_CACHE_DIR", str(other))
    np.testing.assert_allclose(
        ember.compile(lambda x: (x * 5).tanh() + 2)(x).numpy(), ((x * 5).tanh() + 2).numpy(), rtol=1e-6
    )
    assert (other / files[0].name).read_bytes()[:4] == b"\x7fELF"


def test_explain_prints_graphs_groups_and_source(capsys):
    ember.compile(lambda x: (x * 1 + 0).exp().sigmoid(), options={"explain": True})(ember.randn(3))
    err = capsys.readouterr().err
    assert "captured" in err and "after simplify" in err and "fused group0" in err
    assert "generated source (" in err and ".so)" in err and "void ember_k0" in err


def test_in_place_ops_are_replayed():
    def f(x, buf):
        buf.add_(x)
        return buf * 2 + 1

    x, buf, buf2 = ember.randn(4), ember.zeros(4), ember.zeros(4)
    cf = ember.compile(f)
    got = cf(x, buf)
    np.testing.assert_allclose(got.numpy(), f(x, buf2).numpy())
    np.testing.assert_allclose(buf.numpy(), x.numpy())


def test_training_runs_captured_backward_as_one_node():
    w = ember.randn(6, requires_grad=True)
    b = ember.randn(6, requires_grad=True)
    f = ember.compile(lambda x: ((x * w + b).tanh() * 2 - x).sigmoid())
    x = ember.randn(4, 6)
    y = f(x)
    assert y.grad_fn.name() == "JointFunctionBackward"
    (entry,) = f.cache.values()
    assert entry.joint and any(k == "group" for k, _ in entry.bwd_steps)  # the backward is fused too
    y.sum().backward(retain_graph=True)
    y.sum().backward()  # gradients accumulate into .grad, as in eager
    gw, gb = w.grad.numpy().copy(), b.grad.numpy().copy()
    w.grad = b.grad = None
    y2 = ((x * w + b).tanh() * 2 - x).sigmoid()
    y2.sum().backward(retain_graph=True)
    y2.sum().backward()
    np.testing.assert_allclose(gw, w.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_mlp_training_uses_the_joint_graph():
    m = MLP(in_features=12, hidden=(16, 8), num_classes=3, dropout=0.0)
    cm = ember.compile(m)
    x, t = ember.randn(5, 12), ember.randint(0, 3, (5,))
    out = cm(x)
    (entry,) = cm._compiled.cache.values()
    assert entry.joint and out.grad_fn.name() == "JointFunctionBackward"
    ember.nn.functional.cross_entropy(out, t).backward()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    ember.nn.functional.cross_entropy(m(x), t).backward()
    for u, p in zip(grads, m.parameters()):
        np.testing.assert_allclose(u, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_gradient_kernels_that_read_their_node_are_replayed():
    # layer_norm's and cross_entropy's gradient kernels take their autograd node as a parameter:
    # the compiled forward records those nodes and the compiled backward hands them over.
    ln = ember.nn.LayerNorm(6)
    t = ember.randint(0, 6, (3,))
    f = ember.compile(lambda x: ember.nn.functional.cross_entropy(ln(x).tanh(), t))
    x = ember.randn(3, 6, requires_grad=True)
    loss = f(x)
    assert loss.grad_fn.name() == "JointFunctionBackward"
    (entry,) = f.cache.values()
    assert {"layer_norm_backward", "class_loss_backward"} <= set(entry.graph.counts())
    loss.backward()
    g, gw = x.grad.numpy().copy(), ln.weight.grad.numpy().copy()
    x.grad = ln.weight.grad = ln.bias.grad = None
    ember.nn.functional.cross_entropy(ln(x).tanh(), t).backward()
    np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gw, ln.weight.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_a_failing_compiled_graph_falls_back_to_eager(monkeypatch):
    from ember.compile import api

    def broken(steps, kernels, env):
        raise RuntimeError("simulated compiler bug")

    monkeypatch.setattr(api, "execute", broken)
    cf = ember.compile(lambda x: (x * 2).exp())
    x = ember.randn(3)
    with pytest.warns(UserWarning, match="simulated compiler bug"):
        got = cf(x)
    np.testing.assert_allclose(got.numpy(), (x * 2).exp().numpy())
    with pytest.raises(RuntimeError, match="invalid for input of size 3"), pytest.warns(UserWarning):
        ember.compile(lambda x: x.reshape(7) * 2)(x)  # a genuine error still surfaces


def test_lstm_with_gradients_uses_the_joint_graph():
    from ember.models import LSTMLanguageModel

    m = LSTMLanguageModel(vocab_size=12, embed_dim=8, hidden_size=8, dropout=0.0)
    cm = ember.compile(m)
    idx = ember.randint(0, 12, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cm(idx)
    assert out.grad_fn.name() == "JointFunctionBackward"
    out.pow(2).sum().backward()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    m(idx).pow(2).sum().backward()
    for a, p in zip(grads, m.parameters()):
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_moe_routing_is_captured_whole():
    """MoE routing is tensor ops with static shapes: MoE-GPT with gradients is one joint graph."""
    from ember.models import GPTConfig, MoEGPT

    ember.manual_seed(0)
    m = MoEGPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16, moe_capacity_factor=0.5))
    cm = ember.compile(m)
    idx = ember.randint(0, 16, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logits, _ = cm(idx)
    assert logits.grad_fn.name() == "JointFunctionBackward" and not cm._compiled.breaks
    logits.pow(2).sum().backward()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    want, _ = m(idx)
    assert m.moe_layers()[0].dropped_tokens > 0  # capacity 0.5: the graph drops assignments too
    np.testing.assert_allclose(logits.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    want.pow(2).sum().backward()
    for a, p in zip(grads, m.parameters()):
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-4, atol=1e-6)
