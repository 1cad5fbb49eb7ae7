"""The ``cuda`` code paths, on a machine without a GPU: the device table and the end-to-end CUDA
tests run against tests/strict_cupy.py, a NumPy-backed stand-in with CuPy's rules (no implicit
conversion to NumPy, no NumPy operands). Necessary, not sufficient: scripts/gpu_check.sh runs the
same tests on a real GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(bool(os.environ.get("EMBER_TEST_STRICT_CUPY")), reason="already under the stand-in")
def test_cuda_paths_pass_under_strict_cupy():
    env = {**os.environ, "EMBER_TEST_STRICT_CUPY": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-k", "cuda"]
    cmd += ["tests/test_devices.py", "tests/test_cuda_end_to_end.py"]
    _passes(cmd, env, at_least=40)  # (the two tests that launch real CUDA kernels skip here)


# The oracle suites whose op functions run Ember on $EMBER_TEST_DEVICE (tests/helpers.py: check)
ORACLE_SUITES = [
    "tests/test_ops_elementwise.py",
    "tests/test_ops_reduce.py",
    "tests/test_ops_linalg.py",
    "tests/test_indexing.py",
    "tests/test_views_movement.py",
    "tests/test_inplace.py",
    "tests/nn/test_functional.py",
    "tests/nn/test_losses.py",
]


@pytest.mark.skipif(bool(os.environ.get("EMBER_TEST_STRICT_CUPY")), reason="already under the stand-in")
def test_oracle_suites_on_cuda_under_strict_cupy():
    env = {**os.environ, "EMBER_TEST_STRICT_CUPY": "1", "EMBER_TEST_DEVICE": "cuda", "PYTHONPATH": str(ROOT)}
    _passes(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *ORACLE_SUITES], env, 800
    )


def _passes(cmd, env, at_least: int):
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout.splitlines()[-1])
    assert passed and int(passed.group(1)) >= at_least, r.stdout[-1000:]  # the tests ran, not skipped
