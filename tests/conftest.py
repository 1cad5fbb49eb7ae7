"""Shared test fixtures: seeds, and PyTorch (the oracle) limited to the same threads as Ember."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if os.environ.get("EMBER_TEST_STRICT_CUPY"):  # the cuda paths on a machine without a GPU (tests/strict_cupy.py)
    from tests import strict_cupy

    strict_cupy.install()

import ember  # noqa: E402 - after the optional stand-in for CuPy
from ember.backends import ckernels
from ember.backends.ckernels import ops as ckops
from ember.datasets.idx import write_idx

torch.set_num_threads(2)

# The warm cache of compiled training steps (ember/compile/step_cache.py) is keyed by the graph
# and the settings, not by code a test patches (a lowering, a tile switch): off in the suite, so a
# test never reads what another made under its patches, nor leaves entries in the user's cache.
# tests/test_compile_step_cache.py turns it on, over its own folder. EMBER_TEST_STEP_CACHE=1 leaves
# it on, to run the compile tests through it (twice, with EMBER_STEP_CACHE_DIR: the second run loads).
if os.environ.get("EMBER_TEST_STEP_CACHE") != "1":
    os.environ["EMBER_STEP_CACHE"] = "0"


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    ember.manual_seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def kernel_state():
    """Save and restore the C kernel loader's state, so tests may reset or disable the kernels."""
    saved, fns = dict(ckernels._state), dict(ckops._fns)
    yield
    ckernels._state.update(saved)
    ckops._fns.clear()
    ckops._fns.update(fns)


@pytest.fixture
def no_kernels(kernel_state, monkeypatch):
    """The NumPy paths: the C kernel loader finds no compiler."""
    monkeypatch.setattr(ckernels, "compiler", lambda: None)
    ckernels.reset()
    ckops._fns.clear()


def _available_devices() -> list:
    """Device kinds the oracle tests run on: cpu, meta (shapes and dtypes only), and cuda when a
    GPU and CuPy are present."""
    kinds = ["cpu", "meta"]
    from ember.backends import cuda as _cuda

    if _cuda.is_available():
        kinds.append("cuda")
    return kinds


@pytest.fixture(params=_available_devices())
def device(request):
    """Each available device kind in turn (tests/test_devices.py compares against PyTorch on CPU)."""
    return request.param


@pytest.fixture()
def tiny_fashion(tmp_path):
    """(``ember train`` tests) A 256/64-image stand-in for Fashion-MNIST: the class decides which band of rows is bright."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for stem, n in (("train", 256), ("t10k", 64)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 4] = 250
        write_idx(root / f"{stem}-images-idx3-ubyte", images)
        write_idx(root / f"{stem}-labels-idx1-ubyte", labels)
    return root
