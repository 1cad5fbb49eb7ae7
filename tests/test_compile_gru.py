"""GRU and Elman RNN (tanh, relu) time loops lowered into a whole-step program
(codegen/lowerings_gru.py): the step is one native segment and matches eager step for step
(losses, parameters, gradients)."""

import warnings

import numpy as np
import pytest

import ember
from ember.compile.step import StepEntry

pytestmark = pytest.mark.skipif(ember.backends.ckernels.get() is None, reason="needs the C kernels")


def _make(kind, bidirectional, dtype):
    ember.manual_seed(0)
    if kind == "gru":
        rnn = ember.nn.GRU(5, 6, num_layers=2, batch_first=True, bidirectional=bidirectional)
    else:
        rnn = ember.nn.RNN(5, 6, num_layers=2, batch_first=True, bidirectional=bidirectional, nonlinearity=kind)
    head = ember.nn.Linear(12 if bidirectional else 6, 3)
    rnn, head = rnn.to(dtype), head.to(dtype)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = ember.optim.Adam(params, lr=1e-2)
    x, y = ember.randn(4, 7, 5, dtype=dtype), ember.randint(0, 3, (4,))

    def step():
        opt.zero_grad()
        out, h = rnn(x)
        loss = ember.nn.functional.cross_entropy(head(out[:, -1]), y) + (h * h).mean()
        loss.backward()
        opt.step()
        return loss

    return step, params


@pytest.mark.parametrize(
    "kind,bidirectional,dtype",
    [
        ("gru", False, ember.float32),
        ("gru", True, ember.float32),
        ("tanh", True, ember.float32),
        ("relu", False, ember.float32),
        ("gru", False, ember.float64),
    ],
)
def test_recurrent_step_is_one_native_segment_and_matches_eager(kind, bidirectional, dtype):
    eager, pe = _make(kind, bidirectional, dtype)
    step, pc = _make(kind, bidirectional, dtype)
    compiled = ember.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            np.testing.assert_allclose(compiled().item(), eager().item(), rtol=1e-5)
    for a, b in zip(pc, pe):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-6)
    entry = list(compiled.cache.values())[-1]
    assert isinstance(entry, StepEntry)
    assert entry.graph.counts()["recurrent_sequence"] == (4 if bidirectional else 2)
    prog = entry.program
    assert sum(1 for fn, _ in prog.plan if fn is not None) == 1 and not prog.spec.eager_nodes
