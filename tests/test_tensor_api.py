"""The Tensor object's API against PyTorch: attributes, conversion, devices, Python protocols."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, check, rand


def test_shape_attributes():
    for L in (ember, torch):
        x = L.zeros(2, 3, 4)
        assert x.shape == (2, 3, 4) and x.size() == (2, 3, 4)
        assert x.size(1) == 3 and x.size(-1) == 4
        assert x.dim() == x.ndim == 3
        assert x.numel() == 24
        assert len(x) == 2
        assert x.dtype == L.float32
        assert x.device == L.device("cpu")
        assert not x.requires_grad and x.grad is None and x.is_leaf
        assert x.stride() == (12, 4, 1)
        assert L.tensor(3.0).dim() == 0 and L.tensor(3.0).shape == ()
    assert repr(ember.zeros(2, 3).shape) == "ember.Size([2, 3])"
    assert repr(ember.zeros(()).shape) == "ember.Size([])"
    assert isinstance(ember.zeros(2).shape, ember.Size)
    assert ember.Size([2, 3]).numel() == 6
    s = ember.zeros(2, 3, 4).shape
    assert repr(s[1:]) == "ember.Size([3, 4])" and s[-1] == 4 and isinstance(s[0], int)
    assert repr(s + (5,)) == "ember.Size([2, 3, 4, 5])" and repr((1,) + s) == "ember.Size([1, 2, 3, 4])"
    assert s == (2, 3, 4) and s == torch.Size([2, 3, 4])


def test_item_tolist_python_numbers():
    for L in (ember, torch):
        assert L.tensor(2.5).item() == 2.5 and isinstance(L.tensor(2.5).item(), float)
        assert L.tensor([7]).item() == 7 and isinstance(L.tensor([7]).item(), int)
        assert L.tensor(True).item() is True
        assert L.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
        assert L.tensor(1.5).tolist() == 1.5
        assert int(L.tensor(3.7)) == 3 and float(L.tensor(2)) == 2.0
        assert bool(L.tensor([0.0])) is False and bool(L.tensor(2)) is True
        assert [0, 1, 2, 3][L.tensor(2)] == 2  # __index__
        assert f"{L.tensor(3.14159):.2f}" == "3.14"


def test_index_protocol_rejects_floats():
    for L in (ember, torch):
        with pytest.raises(TypeError):
            [1, 2][L.tensor(1.0)]


def test_iteration_and_len():
    for L in (ember, torch):
        rows = list(L.arange(6).reshape(3, 2))
        assert len(rows) == 3 and rows[1].tolist() == [2, 3]
        with pytest.raises(TypeError):
            iter(L.tensor(1.0)).__next__()
        assert 3 in L.arange(6)


def test_iteration_keeps_gradients():
    check(lambda L, x: L.stack([r * (i + 1) for i, r in enumerate(x)]), rand(3, 2))


def test_numpy_shares_memory():
    for L in (ember, torch):
        x = L.zeros(3)
        a = x.numpy()
        a[0] = 5.0
        assert x[0].item() == 5.0
        x.add_(1)
        assert a[1] == 1.0
        y = L.from_numpy(a)
        y[2] = -1.0
        assert a[2] == -1.0
        assert L.ones(2, requires_grad=True).detach().numpy().tolist() == [1.0, 1.0]


def test_clone_contiguous_detach():
    for L in (ember, torch):
        x = L.arange(6.0).reshape(2, 3)
        c = x.clone()
        c[0, 0] = 9.0
        assert x[0, 0].item() == 0.0
        t = x.t()
        assert not t.is_contiguous()
        tc = t.contiguous()
        assert tc.is_contiguous() and tc.stride() == (2, 1)
        assert x.contiguous() is x
        assert_close(tc, torch.arange(6.0).reshape(2, 3).t().contiguous()) if L is ember else None
    check(lambda L, x: x.t().contiguous().clone() * 2, rand(2, 3))


CASTS = {
    "float": lambda x: x.float(),
    "double": lambda x: x.double(),
    "half": lambda x: x.half(),
    "long": lambda x: x.long(),
    "int": lambda x: x.int(),
    "bool": lambda x: x.bool(),
    "to_dtype": lambda x: x.to(
        x.new_zeros(1, dtype=torch.float64 if isinstance(x, torch.Tensor) else ember.float64).dtype
    ),
    "to_cpu": lambda x: x.to("cpu"),
    "to_other": lambda x: x.to(x.new_zeros(1).long()),
    "to_kw": lambda x: x.to(device="cpu", dtype=x.new_zeros(1).half().dtype),
    "cpu": lambda x: x.cpu(),
}


@pytest.mark.parametrize("name", list(CASTS))
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_casts(name, dtype):
    check(lambda L, x: CASTS[name](x), rand(2, 3, dtype=dtype), grad=False)


def test_cast_gradients():
    check(lambda L, x: x.double().sin().float() * x.half().float(), rand(3))
    check(lambda L, x, y: x.type_as(y) * y, rand(3), rand(3, dtype=np.float64))


def test_to_returns_self_when_nothing_changes():
    for L in (ember, torch):
        x = L.ones(2)
        assert x.to(L.float32) is x and x.to("cpu") is x and x.float() is x
        assert x.to(L.float32, copy=True) is not x
        assert x.long().to(x) is not x


def test_long_cut_gradient():
    for L in (ember, torch):
        x = L.ones(2, requires_grad=True)
        assert not x.long().requires_grad
        assert x.double().requires_grad


def test_device_object():
    d = ember.device("cpu")
    assert d == ember.device("cpu") and d == "cpu"
    assert repr(d) == "device(type='cpu')" == repr(torch.device("cpu"))
    assert str(d) == "cpu"
    assert repr(ember.device("cuda:1")) == repr(torch.device("cuda:1"))
    assert ember.device("cuda", 0).index == 0
    assert ember.device("cpu") != ember.device("cuda")
    assert ember.zeros(1).device.type == "cpu"
    assert hash(ember.device("cpu")) == hash(ember.device("cpu"))
    with pytest.raises(RuntimeError):
        ember.device("tpu")
    assert not ember.zeros(1).is_cuda


def test_cuda_not_available_here():
    assert ember.cuda.is_available() is False
    assert ember.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="CuPy|NVIDIA"):
        ember.zeros(2).cuda()


def test_pickle_and_deepcopy():
    x = ember.tensor(rand(2, 3), requires_grad=True)
    (x * 2).sum().backward()
    y = pickle.loads(pickle.dumps(x))
    assert isinstance(y, ember.Tensor) and y.requires_grad and y.is_leaf
    np.testing.assert_array_equal(y.detach().numpy(), x.detach().numpy())
    z = copy.deepcopy(x)
    assert z.requires_grad and z is not x
    np.testing.assert_array_equal(z.grad.numpy(), x.grad.numpy())
    z.data.add_(1)
    assert not np.array_equal(z.detach().numpy(), x.detach().numpy())
    i = pickle.loads(pickle.dumps(ember.arange(4)))
    assert i.dtype == ember.int64 and i.tolist() == [0, 1, 2, 3]
    assert copy.copy(ember.ones(2)).tolist() == [1.0, 1.0]


def test_deepcopy_of_views_and_containers():
    x = ember.arange(6.0)
    box = {"a": x, "b": x}
    c = copy.deepcopy(box)
    assert c["a"] is c["b"]  # the memo keeps identity
    c["a"][0] = 5.0
    assert x[0].item() == 0.0


def test_deepcopy_nonleaf_raises_like_torch():
    for L in (ember, torch):
        y = L.ones(2, requires_grad=True) * 2
        with pytest.raises(RuntimeError, match="graph leaves"):
            copy.deepcopy(y)


def test_repr_like_torch():
    assert repr(ember.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(ember.tensor([1, 2])) == "tensor([1, 2])"
    assert "requires_grad=True" in repr(ember.ones(1, requires_grad=True))
    assert "grad_fn=<MulBackward0>" in repr(ember.ones(1, requires_grad=True) * 2)


def test_misc_methods():
    for L in (ember, torch):
        x = L.arange(6.0).reshape(2, 3)
        assert x.element_size() == 4 and x.nbytes == 24
        assert x.is_floating_point() and not x.long().is_floating_point()
        assert x.new_zeros(2).dtype == L.float32 and x.new_ones(2, 2).shape == (2, 2)
        assert x.new_tensor([1, 2]).dtype == L.float32
        assert x.type() == "torch.FloatTensor"  # PyTorch's string, which programs compare
        assert x.grad_fn is None
        g = L.ones(2, 3)
        x.requires_grad_()
        x.grad = g
        assert x.grad is g
        x.grad = None
