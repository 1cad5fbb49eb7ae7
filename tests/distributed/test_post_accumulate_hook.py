"""Tensor.register_post_accumulate_grad_hook: fires once per backward, as soon as a leaf's grad is final."""

import pytest
import torch

import ember


def _mlp(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(
        lib.nn.Linear(4, 5), lib.nn.Tanh(), lib.nn.Linear(5, 5), lib.nn.Tanh(), lib.nn.Linear(5, 2)
    )


def _fire_order(lib):
    m = _mlp(lib)
    names = dict((id(p), n) for n, p in m.named_parameters())
    log = []

    def hook(p):
        # the other leaves' state at this moment shows whether backward is still running
        log.append((names[id(p)], tuple(n for n, q in m.named_parameters() if q.grad is not None)))

    for p in m.parameters():
        p.register_post_accumulate_grad_hook(hook)
    x = lib.ones(3, 4)
    m(x).pow(2).sum().backward()
    return log


def test_fires_mid_backward_in_torch_order():
    got = _fire_order(ember)
    want = _fire_order(torch)
    # layer by layer, last first, as PyTorch (weight and bias of one layer may come in either order)
    assert [n.split(".")[0] for n, _ in got] == [n.split(".")[0] for n, _ in want]
    assert [len(done) for _, done in got] == [len(done) for _, done in want]
    # the last layer's weight is final before the first layer's grad exists
    first = got[0]
    assert first[0].startswith("4.") and "0.weight" not in first[1]


def test_leaf_used_twice_fires_once_after_both_contributions():
    w = ember.ones(3, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.tolist()))
    ((w * 2).sum() + (w * w).sum()).backward()
    assert seen == [[4.0, 4.0, 4.0]]


def test_handle_remove_and_errors():
    w = ember.ones(2, requires_grad=True)
    h = w.register_post_accumulate_grad_hook(lambda p: (_ for _ in ()).throw(AssertionError("removed")))
    h.remove()
    (w * 2).sum().backward()
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        ember.ones(2).register_post_accumulate_grad_hook(print)
