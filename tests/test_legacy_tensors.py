"""Legacy typed constructors (``FloatTensor``, ``LongTensor``, ...) and ``Tensor.type``, against torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ember

NAMES = ["Float", "Double", "Half", "Long", "Int", "Short", "Byte", "Char", "Bool"]


@pytest.mark.parametrize("name", NAMES)
def test_construct_from_data_and_sizes(name):
    cls_e, cls_t = getattr(ember, name + "Tensor"), getattr(torch, name + "Tensor")
    for args in ([[1, 0, 2]], [range(3)], [(1.0, 2.0)], [np.arange(3)], [2, 3], [ember.Size([2, 1])], []):
        targs = [torch.Size(a) if isinstance(a, ember.Size) else a for a in args]
        e, t = cls_e(*args), cls_t(*targs)
        assert str(e.dtype).split(".")[1] == str(t.dtype).split(".")[1]
        assert tuple(e.shape) == tuple(t.shape)
        if args and not isinstance(args[0], (int, ember.Size)):
            np.testing.assert_array_equal(e.numpy(), t.numpy())
        assert isinstance(e, cls_e) and e.type() == t.type() == f"torch.{name}Tensor"


def test_isinstance_is_dtype_and_device_specific():
    x = ember.arange(3)
    assert isinstance(x, ember.LongTensor) and isinstance(x, ember.Tensor)
    assert not isinstance(x, ember.FloatTensor) and not isinstance(x, ember.IntTensor)
    assert not isinstance(x, ember.cuda.LongTensor)
    assert not isinstance([1, 2], ember.LongTensor)
    assert isinstance(ember.zeros(2), ember.FloatTensor) and isinstance(ember.zeros(2).double(), ember.DoubleTensor)
    assert ember.LongTensor.dtype is ember.int64 and repr(ember.LongTensor) == "<class 'ember.LongTensor'>"
    # The constructors return plain tensors, as torch's do.
    assert type(ember.LongTensor([1])) is ember.Tensor


def test_constructor_errors_match_torch():
    for lib in (ember, torch):
        with pytest.raises(TypeError):
            lib.FloatTensor(lib.arange(3))  # a long tensor into FloatTensor
        with pytest.raises(TypeError):
            lib.FloatTensor(2.5)
        with pytest.raises(TypeError):
            lib.FloatTensor(3, dtype=lib.float64)
    src = ember.arange(3.0)
    alias = ember.FloatTensor(src)
    alias[0] = 7.0  # shares memory with the argument, as in torch
    assert src[0].item() == 7.0
    assert ember.LongTensor([1.5, 2.7]).tolist() == torch.LongTensor([1.5, 2.7]).tolist()


def test_type_strings_and_conversion():
    for lib in (ember, torch):
        x = lib.arange(3)
        assert x.type() == "torch.LongTensor"
        assert x.type(lib.LongTensor) is x
        y = x.type(lib.FloatTensor)
        assert y.dtype == lib.float32 and y.type() == "torch.FloatTensor"
        assert x.type("torch.DoubleTensor").dtype == lib.float64
        assert x.type(lib.float16).dtype == lib.float16
        assert x.type(dtype=lib.IntTensor).dtype == lib.int32
        with pytest.raises(ValueError, match="invalid type"):
            x.type("ember.Nope")
    assert ember.arange(3).type("ember.ByteTensor").dtype == ember.uint8


def test_type_conversion_keeps_gradient():
    for lib in (ember, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x.type(lib.DoubleTensor)
        (y * y).sum().backward()
        assert x.grad.dtype == lib.float32 and x.grad.tolist() == [2.0, 4.0]


def test_cuda_types_without_gpu():
    if ember.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TypeError, match="not available"):
        ember.cuda.FloatTensor([1.0])
    assert ember.zeros(1).type() == "torch.FloatTensor"


def test_set_default_tensor_type_matches_torch():
    with pytest.warns(UserWarning, match="deprecated"):  # torch warns once per process: check ours only
        ember.set_default_tensor_type(ember.FloatTensor)
    for lib in (ember, torch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                lib.set_default_tensor_type(lib.DoubleTensor)
                assert lib.get_default_dtype() == lib.float64 and lib.zeros(1).dtype == lib.float64
                lib.set_default_tensor_type("torch.FloatTensor")
                assert lib.get_default_dtype() == lib.float32
                with pytest.raises(TypeError, match="floating-point"):
                    lib.set_default_tensor_type(lib.LongTensor)
            finally:
                lib.set_default_dtype(lib.float32)
