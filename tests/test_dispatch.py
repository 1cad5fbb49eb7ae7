"""The dispatch point: the primitive registry, apply's modes (capture), the meta device, 0-d results."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import models
from ember.ops.capture import capture
from ember.ops.dispatch import REGISTRY, Primitive, apply
from ember.profiler import profile


# --------------------------------------------------------------------------- registry and apply
def test_registry_holds_the_primitives_with_their_rules():
    from ember.autograd import _jvp_rules

    _jvp_rules.install()  # forward AD fills the jvp slots (once, at its first level)
    for name in ("add", "mul", "sum", "matmul", "getitem", "softmax", "conv2d", "cross_entropy", "add_"):
        prim = REGISTRY[name]
        assert prim.name == name and (prim.jvp is not None) == (prim.node is not None)
        assert "cpu" in prim.impls and "meta" in prim.impls
    assert REGISTRY["add"].node.__name__ == "Add"
    assert REGISTRY["eq"].node is None  # comparisons run through apply too, without a gradient rule


def test_apply_makes_the_node_of_the_primitive():
    x = ember.ones(3, requires_grad=True)
    y = apply(REGISTRY["mul"], x, 2.0)
    assert y.grad_fn.name() == "MulBackward0" and y.grad_fn.inputs[0] is x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_missing_device_implementation_raises_naming_op_and_device():
    prim = Primitive("cpu_only_test_op", cpu=lambda x: x._data * 2)
    assert apply(prim, ember.ones(2)).tolist() == [2.0, 2.0]
    with pytest.raises(NotImplementedError, match="cpu_only_test_op.*meta"):
        apply(prim, ember.ones(2, device="meta"))


def test_data_dependent_shapes_are_refused_on_meta():
    x = ember.ones(4, device="meta")
    with pytest.raises(NotImplementedError, match="nonzero"):
        x.nonzero()
    with pytest.raises(RuntimeError, match="meta"):
        x.sum().item()


# --------------------------------------------------------------------------- 0-d results
def test_zero_dim_results_are_arrays_not_numpy_scalars():
    x = ember.randn(5, requires_grad=True)
    s = ember.tensor(2.0)
    for t in (x.mean(), x.sum(), s + 1, s * s, (s + 1).sum(), x.max(), x.argmax(), s.exp(), -s, s.sum() + s.sum()):
        assert type(t._data) is np.ndarray and t._data.ndim == 0
    loss = x.sum()
    loss *= 0.5  # in place on a 0-d result
    assert loss.shape == ()
    idx = ember.tensor([0, 2])
    assert F.one_hot(idx, ember.tensor(3)).shape == (2, 3)


# --------------------------------------------------------------------------- meta device
def test_meta_tensors_and_modules_have_shapes_only():
    x = ember.empty(1000, 1000, 1000, device="meta")
    assert x.device.type == "meta" and x.shape == (1000, 1000, 1000)
    y = (x @ x).softmax(-1).sum(0)
    assert y.shape == (1000, 1000) and y.dtype == ember.float32
    with ember.device("meta"):
        lin = ember.nn.Linear(4096, 4096)
        assert ember.zeros(3).device.type == "meta"
    assert ember.zeros(3).device.type == "cpu"
    assert lin.weight.device.type == "meta" and lin.weight.shape == (4096, 4096)
    with pytest.raises(NotImplementedError, match="meta"):
        lin.weight.cpu()


def test_175b_gpt_on_meta_counts_parameters_and_flops_without_memory():
    cfg = models.GPTConfig(n_layer=96, n_head=96, n_embd=12288, vocab_size=50257, block_size=2048)
    tracemalloc.start()
    try:
        with ember.device("meta"):
            model = models.GPT(cfg)
            idx = ember.zeros(1, 64, dtype=ember.long)
        with capture() as graph:
            logits, _ = model(idx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    c, v, t = cfg.n_embd, cfg.vocab_size, cfg.block_size
    per_layer = 12 * c * c + 13 * c  # qkv + proj + 2 MLP linears (weights and biases), 2 LayerNorms
    expected = cfg.n_layer * per_layer + v * c + t * c + 2 * c  # tied embedding/head, wpe, final LayerNorm
    assert sum(p.numel() for p in model.parameters()) == expected  # 174.6e9
    assert expected > 174e9
    assert logits.shape == (1, 64, v) and logits.device.type == "meta"
    assert peak < 200e6  # the weights alone would be 700 GB
    # Forward FLOPs of the linear layers (2 * rows * in * out each), read off the captured graph.
    flops = 0
    for rec in graph.ops:
        if rec.op == "linear":
            x_shape, w_shape = graph.value(rec.inputs[0]).shape, graph.value(rec.inputs[1]).shape
            flops += 2 * int(np.prod(x_shape[:-1])) * w_shape[0] * w_shape[1]
    tokens = 64
    assert flops == 2 * tokens * (cfg.n_layer * 12 * c * c + c * v)


# --------------------------------------------------------------------------- capture
def _sgd_step(params, bufs, lr=0.1, momentum=0.9):
    """SGD with momentum written with in-place tensor ops (what optimizers do under no_grad)."""
    with ember.no_grad():
        for p in params:
            if p.grad is None:
                continue
            b = bufs.get(id(p))
            if b is None:
                b = bufs[id(p)] = p.grad.clone()
            else:
                b.mul_(momentum).add_(p.grad)
            p.add_(b, alpha=-lr)


def _adam_step(params, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    with ember.no_grad():
        for p in params:
            if p.grad is None:
                continue
            m, v = state.setdefault(id(p), (ember.zeros_like(p), ember.zeros_like(p)))
            m.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
            p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)


_CASES = {
    "mlp": (lambda: models.MLP(), lambda: (ember.randn(8, 1, 28, 28), ember.randint(0, 10, (8,))), _adam_step),
    "resnet": (lambda: models.ResNet(), lambda: (ember.randn(4, 1, 28, 28), ember.randint(0, 10, (4,))), _sgd_step),
    "gpt": (
        lambda: models.GPT(models.GPTConfig(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=16)),
        lambda: (ember.randint(0, 65, (2, 16)), ember.randint(0, 65, (2, 16))),
        _adam_step,
    ),
    "lstm": (
        lambda: models.LSTMLanguageModel(65, 32, 64, 2),
        lambda: (ember.randint(0, 65, (2, 16)), ember.randint(0, 65, (2, 16))),
        _adam_step,
    ),
}


def _train_step(model, x, y, opt_step, opt_state):
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    opt_step(list(model.parameters()), opt_state)
    return loss


@pytest.mark.parametrize("name", list(_CASES))
def test_capture_records_a_training_step_once_and_computes_nothing(name):
    make, data, opt_step = _CASES[name]
    # Eager on cpu, counting every op that apply runs (the profiler is a mode of apply too).
    ember.manual_seed(0)
    model = make()
    model.eval() if name == "lstm" else None  # no dropout: the same ops in both runs
    x, y = data()
    with profile() as prof:
        loss = _train_step(model, x, y, opt_step, {})
    eager = {}
    for e in prof.key_averages():  # one row per (op, phase): add the phases up
        if e.key in REGISTRY:
            eager[e.key] = eager.get(e.key, 0) + e.count
    grads = {n: (p.grad.shape, p.grad.dtype) for n, p in model.named_parameters()}

    with ember.device("meta"):
        ember.manual_seed(0)
        model = make()
        model.eval() if name == "lstm" else None
        x, y = data()
    before = {n: p._data for n, p in model.named_parameters()}
    with capture() as graph:
        traced_loss = _train_step(model, x, y, opt_step, {})

    assert dict(graph.counts()) == eager  # every op once, as many times as eager runs it
    assert {"cross_entropy", "linear", "add_"} <= set(graph.counts()) or name == "resnet"
    assert graph.counts()["cross_entropy"] == 1 and graph.counts()["class_loss_backward"] == 1
    phases = {r.phase for r in graph.ops}
    assert phases == {"forward", "backward"}
    assert (traced_loss.shape, traced_loss.dtype) == (loss.shape, loss.dtype)
    assert {n: (p.grad.shape, p.grad.dtype) for n, p in model.named_parameters()} == grads
    # Nothing computed: every value is a meta array (shape and dtype only), the parameters too.
    assert all(type(r.prim) is Primitive for r in graph.ops)
    assert all(p.device.type == "meta" and p._data is before[n] for n, p in model.named_parameters())
    for v in graph.values:
        assert isinstance(v.shape, tuple) and v.dtype is not None


def test_capture_of_cpu_tensors_traces_them_as_inputs_and_leaves_them_untouched():
    w = ember.randn(3, 4, requires_grad=True)
    x = ember.randn(2, 3)
    w0 = w.detach().clone()
    with capture() as graph:
        y = (x @ w).relu().sum()
        y.backward()
    assert y.device.type == "meta" and w.grad is None
    assert np.array_equal(w.numpy(force=True), w0.numpy())
    assert len(graph.inputs) == 2 and graph.counts()["matmul"] == 2
    assert "matmul" in str(graph)
