"""Every layer against torch.nn: same state dict -> same outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember import nn
from tests.helpers import assert_close, rand
from tests.nn import compare_modules, load_from_torch

LAYERS = [
    ("Linear", (5, 3), {}, (4, 5)),
    ("Linear", (5, 3), {"bias": False}, (2, 6, 5)),
    ("Identity", (), {}, (3, 2)),
    ("Flatten", (), {}, (2, 3, 4)),
    ("Flatten", (0, 1), {}, (2, 3, 4)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6)),
    ("LayerNorm", (6,), {}, (3, 6)),
    ("LayerNorm", ((4, 6),), {}, (2, 3, 4, 6)),
    ("LayerNorm", (6,), {"bias": False}, (3, 6)),
    ("LayerNorm", (6,), {"elementwise_affine": False}, (3, 6)),
    ("GroupNorm", (2, 6), {}, (3, 6, 5)),
    ("GroupNorm", (3, 6), {"affine": False}, (2, 6, 2, 2)),
    ("RMSNorm", (6,), {}, (3, 6)),
    ("RMSNorm", ((2, 6),), {"eps": 1e-5}, (3, 2, 6)),
    ("ReLU", (), {}, (3, 4)),
    ("ReLU6", (), {}, (3, 4)),
    ("LeakyReLU", (0.2,), {}, (3, 4)),
    ("PReLU", (), {}, (3, 4)),
    ("PReLU", (4,), {}, (3, 4, 2)),
    ("ELU", (), {}, (3, 4)),
    ("SELU", (), {}, (3, 4)),
    ("CELU", (0.5,), {}, (3, 4)),
    ("GELU", (), {}, (3, 4)),
    ("GELU", ("tanh",), {}, (3, 4)),
    ("SiLU", (), {}, (3, 4)),
    ("Mish", (), {}, (3, 4)),
    ("Softplus", (), {}, (3, 4)),
    ("Softplus", (2.0, 1.0), {}, (3, 4)),
    ("Hardtanh", (-0.5, 0.5), {}, (3, 4)),
    ("Hardsigmoid", (), {}, (3, 4)),
    ("Hardswish", (), {}, (3, 4)),
    ("Tanh", (), {}, (3, 4)),
    ("Sigmoid", (), {}, (3, 4)),
    ("LogSigmoid", (), {}, (3, 4)),
    ("Softsign", (), {}, (3, 4)),
    ("Tanhshrink", (), {}, (3, 4)),
    ("Threshold", (0.1, 20.0), {}, (3, 4)),
    ("GLU", (), {}, (3, 4)),
    ("Softmax", (1,), {}, (3, 4)),
    ("Softmax", (0,), {}, (3, 4)),
    ("LogSoftmax", (-1,), {}, (2, 3, 4)),
    ("Softmin", (1,), {}, (3, 4)),
    ("Bilinear", (3, 4, 2), {}, None),
    ("LocalResponseNorm", (3,), {}, (2, 5, 4)),
    ("InstanceNorm1d", (3,), {"affine": True}, (2, 3, 5)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS, ids=lambda v: str(v))
def test_layer_matches_torch(name, args, kwargs, shape):
    e_mod = getattr(nn, name)(*args, **kwargs)
    t_mod = getattr(torch.nn, name)(*args, **kwargs)
    assert repr(e_mod) == repr(t_mod)
    assert list(e_mod.state_dict()) == list(t_mod.state_dict())
    if name == "Bilinear":
        compare_modules(e_mod, t_mod, rand(5, 3), rand(5, 4))
    else:
        compare_modules(e_mod, t_mod, rand(*shape))


def test_linear_float64_and_to():
    t_mod = torch.nn.Linear(3, 2).double()
    e_mod = nn.Linear(3, 2).double()
    assert e_mod.weight.dtype == ember.float64
    compare_modules(e_mod, t_mod, rand(4, 3, dtype=np.float64))


def test_embedding_padding_idx():
    t_mod = torch.nn.Embedding(10, 4, padding_idx=1)
    e_mod = nn.Embedding(10, 4, padding_idx=1)
    assert repr(e_mod) == repr(t_mod)
    assert float(e_mod.weight[1].abs().sum()) == 0.0
    idx = np.array([[1, 2, 2], [9, 1, 0]])
    compare_modules(e_mod, t_mod, idx)
    assert float(e_mod.weight.grad[1].abs().sum()) == 0.0


def test_embedding_scale_grad_by_freq_and_negative_padding():
    t_mod = torch.nn.Embedding(6, 3, padding_idx=-1, scale_grad_by_freq=True)
    e_mod = nn.Embedding(6, 3, padding_idx=-1, scale_grad_by_freq=True)
    assert e_mod.padding_idx == t_mod.padding_idx == 5
    compare_modules(e_mod, t_mod, np.array([0, 0, 3, 5, 3, 3]))


def test_embedding_max_norm_renormalizes_weight():
    t_mod = torch.nn.Embedding(5, 3, max_norm=1.0)
    e_mod = nn.Embedding(5, 3, max_norm=1.0)
    load_from_torch(e_mod, t_mod)
    idx = np.array([0, 2, 2])
    e_out = e_mod(ember.tensor(idx))
    t_out = t_mod(torch.tensor(idx))
    assert_close(e_out, t_out)
    assert_close(e_mod.weight, t_mod.weight)


def test_embedding_errors():
    emb = nn.Embedding(4, 2)
    with pytest.raises(IndexError):
        emb(ember.tensor([4]))
    with pytest.raises(RuntimeError):
        emb(ember.tensor([1.0]))


def test_embedding_from_pretrained():
    w = ember.arange(6.0).reshape(3, 2)
    emb = nn.Embedding.from_pretrained(w)
    assert not emb.weight.requires_grad
    assert emb(ember.tensor([2])).tolist() == [[4.0, 5.0]]


def test_dropout_train_and_eval():
    m = nn.Dropout(0.4)
    x = ember.ones(2000)
    y = m(x)
    kept = y._data != 0
    assert 0.5 < kept.mean() < 0.7
    np.testing.assert_allclose(y._data[kept], 1 / 0.6, rtol=1e-6)
    m.eval()
    assert m(x) is x
    assert repr(m) == repr(torch.nn.Dropout(0.4))


def test_dropout_gradient_uses_mask():
    x = ember.ones(100, requires_grad=True)
    y = nn.functional.dropout(x, 0.5)
    y.sum().backward()
    np.testing.assert_allclose(x.grad._data, y.detach()._data)


def test_dropout_p_validation():
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError):
        nn.functional.dropout(ember.ones(2), -0.1)
    assert float(nn.functional.dropout(ember.ones(5), 1.0).abs().sum()) == 0.0


def test_dropout2d_zeroes_whole_channels():
    y = nn.Dropout2d(0.5)(ember.ones(4, 8, 3, 3))
    per_channel = y._data.reshape(32, 9)
    assert np.all((per_channel == 0).all(1) | (per_channel == 2).all(1))


@pytest.mark.parametrize(
    "cls,shape", [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (6, 3, 4)), ("BatchNorm2d", (4, 3, 2, 2))]
)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}, {"momentum": 0.3, "bias": False}],
    ids=str,
)
def test_batchnorm_training_steps_and_eval(cls, shape, kwargs):
    e_mod = getattr(nn, cls)(3, **kwargs)
    t_mod = getattr(torch.nn, cls)(3, **kwargs)
    assert repr(e_mod) == repr(t_mod)
    assert list(e_mod.state_dict()) == list(t_mod.state_dict())
    load_from_torch(e_mod, t_mod)
    for step in range(3):
        x = rand(*shape) * (step + 1) + step
        compare_modules(e_mod, t_mod, x, load=False)
    for (name, eb), (tname, tb) in zip(e_mod.named_buffers(), t_mod.named_buffers()):
        assert name == tname
        assert_close(eb, tb, what=name, rtol=1e-5)
    e_mod.eval()
    t_mod.eval()
    compare_modules(e_mod, t_mod, rand(*shape) - 1, load=False)


def test_batchnorm_errors_and_state_dict_migration():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn(ember.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(ember.ones(1, 3))
    sd = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    # An old (version-less) checkpoint without num_batches_tracked loads, as in torch.
    assert bn.load_state_dict(sd).missing_keys == []


def test_layer_norm_input_shape_error():
    with pytest.raises(RuntimeError, match="normalized_shape"):
        nn.LayerNorm(4)(ember.ones(3, 5))


def test_group_norm_channels_error():
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)


def test_inplace_relu_in_graph():
    for lib in (ember, torch):
        x = lib.tensor([-1.0, 2.0, -3.0], requires_grad=True)
        y = x * 2
        lib.nn.ReLU(inplace=True)(y)
        y.sum().backward()
        assert x.grad.tolist() == [0.0, 2.0, 0.0]
