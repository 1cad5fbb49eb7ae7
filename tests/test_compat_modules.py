"""Compatibility modules and flags (accelerator, backends.cudnn/cuda/mps, onnx, cuda.*, Variable) vs torch."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import ember
from ember.autograd import Variable


@pytest.fixture
def restore_flags():
    yield
    ember.set_float32_matmul_precision("highest")
    ember.use_deterministic_algorithms(False)
    ember.backends.cudnn.benchmark = False
    ember.backends.cudnn.deterministic = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False


def test_modules_import():
    for name in ("accelerator", "onnx", "backends.cudnn", "backends.cuda", "backends.mps"):
        importlib.import_module(f"ember.{name}")
    assert callable(ember.onnx.export) and ember.onnx.is_in_onnx_export() is False  # the exporter (ember/onnx)


@pytest.mark.skipif(ember.cuda.is_available(), reason="CPU-only semantics")
def test_accelerator_cpu_only_matches_torch():
    for lib in (ember, torch):
        assert lib.accelerator.is_available() is False
        assert lib.accelerator.current_accelerator() is None
        assert lib.accelerator.device_count() == 0
        with pytest.raises(RuntimeError, match="accelerator"):
            lib.accelerator.current_device_index()
    assert ember.backends.mps.is_available() is torch.backends.mps.is_available() is False


def test_cudnn_and_matmul_flags(restore_flags):
    for lib in (ember, torch):
        cudnn = lib.backends.cudnn
        assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, cudnn.enabled) == (False, False, True, True)
        assert cudnn.is_available() is (False if lib is ember else torch.cuda.is_available())  # Ember has no cuDNN
        cudnn.benchmark = True
        cudnn.deterministic = True
        assert cudnn.benchmark and cudnn.deterministic
        assert lib.backends.cuda.matmul.allow_tf32 is False
        assert lib.get_float32_matmul_precision() == "highest"
        lib.set_float32_matmul_precision("high")
        assert lib.get_float32_matmul_precision() == "high" and lib.backends.cuda.matmul.allow_tf32 is True
        with pytest.warns(UserWarning):
            lib.set_float32_matmul_precision("bogus")
        assert lib.get_float32_matmul_precision() == "high"
    ember.backends.cuda.matmul.allow_tf32 = False
    assert ember.get_float32_matmul_precision() == "highest"
    with pytest.raises(AttributeError):
        ember.backends.cuda.matmul.allow_tf33 = True


def test_deterministic_flag(restore_flags):
    for lib in (ember, torch):
        assert lib.are_deterministic_algorithms_enabled() is False
        lib.use_deterministic_algorithms(True, warn_only=True)
        assert lib.are_deterministic_algorithms_enabled() and lib.is_deterministic_algorithms_warn_only_enabled()
        lib.use_deterministic_algorithms(False)
        assert not lib.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(ember.cuda.is_available(), reason="CPU-only semantics")
def test_cuda_helpers_without_gpu():
    for lib in (ember, torch):
        lib.cuda.manual_seed(1)
        lib.cuda.manual_seed_all(1)
        assert lib.cuda.is_bf16_supported() is False
        lib.cuda.empty_cache()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ember.cuda.set_device(0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ember.cuda.current_device()
    for lib in (ember, torch):
        with pytest.raises(ValueError, match="Expected a cuda device"):
            lib.cuda.set_device("cpu")
    ember.cuda.set_device(-1)  # ignored, as in torch


def test_variable_matches_torch():
    for lib, var in ((ember, Variable), (torch, torch.autograd.Variable)):
        t = lib.ones(2)
        v = var(t)
        assert v is not t and v.data_ptr() == t.data_ptr() and not v.requires_grad
        v = var(t, requires_grad=True)
        assert v.requires_grad and v.is_leaf and not t.requires_grad
        a = lib.ones(2, requires_grad=True) * 2
        v = var(a)
        assert v.grad_fn is None and not v.requires_grad
        assert isinstance(lib.ones(1), var)
        with pytest.raises(TypeError, match="Variable data has to be a tensor"):
            var([1, 2])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            var(t, volatile=True)
        assert any("volatile" in str(x.message) for x in w)
    v = Variable(ember.tensor([1.0, 2.0]), requires_grad=True)
    (v * v).sum().backward()
    assert v.grad.tolist() == [2.0, 4.0]
