"""The generated elementwise loop (codegen/c.py): blocks aligned to a cache line of the first
full-size input, whatever the buffers' offsets; the streaming-store path for huge outputs gives
the same values as plain stores."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.compile.runtime import build_kernels, render_c

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["compiler"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0",
    reason="no C compiler, or the C kernels are off (EMBER_CKERNELS=0)",
)


def chain(x):
    return ember.maximum((((x * 2 + 1) * x) / 4 + x).relu(), x * 0.5)


def one_group(fn, n, dtype=ember.float32):
    f = ember.compile(fn)
    f(ember.randn(n).to(dtype))
    (entry,) = f.cache.values()
    (group,) = [s[1] for s in entry.steps if s[0] == "group"]
    return group


def run_kernel(kernel, x: np.ndarray, out: np.ndarray) -> None:
    kernel(x.ctypes.data, out.ctypes.data, x.size, 1, x.size)


@pytest.mark.parametrize("n", [1, 15, 4096 + 17, 3 * 4096 + 5])
def test_blocks_start_on_the_input_cache_line_at_any_offset(n):
    group = one_group(chain, n)
    src = render_c([group])
    assert "(uintptr_t)in0 % 64" in src  # the blocks follow in0's alignment
    (k,) = build_kernels([group])
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n + 64).astype(np.float32)
    want = chain(ember.tensor(base)).numpy()
    for xo in (0, 1, 3, 4, 15):  # element offsets: 4, 12, 16, 60 bytes past a line
        for oo in (0, 5):
            buf = np.full(n + 64, np.nan, np.float32)
            run_kernel(k, base[xo : xo + n], buf[oo : oo + n])
            np.testing.assert_array_equal(buf[oo : oo + n], want[xo : xo + n])
            assert np.isnan(buf[:oo]).all() and np.isnan(buf[oo + n :]).all()  # nothing written outside


def test_aligned_blocks_run_in_parallel_over_long_inputs():
    n = (1 << 17) + 4096 * 3 + 7  # parallel (n >= PARALLEL_MIN); odd head and tail
    group = one_group(chain, n)
    (k,) = build_kernels([group])
    x = np.random.default_rng(1).standard_normal(n + 3).astype(np.float32)[3:]
    out = np.empty(n, np.float32)
    before = ember.get_num_threads()
    ember.set_num_threads(2)
    try:
        run_kernel(k, x, out)
    finally:
        ember.set_num_threads(before)
    np.testing.assert_array_equal(out, chain(ember.tensor(x)).numpy())


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_streaming_stores_give_the_plain_stores_values(monkeypatch, dtype):
    c = sys.modules["ember.compile.codegen.c"]
    n = 3 * 4096 + 11
    group = one_group(chain, n, dtype)
    plain = render_c([group])
    monkeypatch.setattr(c, "STREAM_MIN", 1024)  # every output of this size streams
    assert render_c([group]) != plain
    (k,) = build_kernels([group])
    npd = np.float32 if dtype == ember.float32 else np.float64
    x = np.random.default_rng(2).standard_normal(n + 2).astype(npd)[1 : n + 1]
    out = np.zeros(n + 1, npd)[1:]
    run_kernel(k, x, out)
    np.testing.assert_array_equal(out, chain(ember.tensor(x)).numpy())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: the default is already one thread")
def test_set_num_threads_before_the_first_kernel_library_limits_generated_loops():
    """threadpoolctl limits only the libraries loaded when it runs: libgomp arrives later, with
    the first C library, and a generated loop sizes its team by ``omp_get_max_threads()``."""
    code = (
        "import ctypes, ember\n"
        "ember.set_num_threads(1)\n"
        "ember.compile(lambda x: (x * 2 + 1).relu())(ember.randn(8))\n"
        "print(ctypes.CDLL('libgomp.so.1').omp_get_max_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(ember.__file__).parent.parent)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"
