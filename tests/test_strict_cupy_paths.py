"""The ``cuda`` code paths, on a machine without a GPU: the device table and the end-to-end CUDA
tests run against tests/strict_cupy.py, a NumPy-backed stand-in with CuPy's rules (no implicit
conversion to NumPy, no NumPy operands). Necessary, not sufficient: scripts/gpu_check.sh runs the
same tests on a real GPU."""

from __future__ import annotations

import os
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
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-1000:]
