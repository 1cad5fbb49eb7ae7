"""bfloat16 / float16 fusion (codegen/lowp.py): the C stores round exactly as ml_dtypes/NumPy
do, fused groups of 2-byte floats match eager within a few ulps of a float64 reference, GEMMs
widen to float32 for BLAS, and the CUDA rendering compiles with NVRTC (and runs on a GPU)."""

import ctypes

import ml_dtypes
import numpy as np
import pytest

import ember
from ember.backends import ckernels
from ember.compile.capture import trace
from ember.compile.codegen import lowp
from ember.compile.ir import IRGraph
from ember.compile.passes import fuse, run_passes
from ember.compile.runtime import render_c, render_cuda

F = ember.nn.functional
LOW = {"bfloat16": (ember.bfloat16, ml_dtypes.bfloat16, 2.0**-8), "float16": (ember.float16, np.float16, 2.0**-11)}

_ROUNDTRIP = r"""
void st_bf16(const float *x, uint16_t *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = ember_st_bf16(x[i]); }
void st_f16(const float *x, uint16_t *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = ember_st_f16(x[i]); }
void ld_bf16(const uint16_t *x, float *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = ember_ld_bf16(x[i]); }
void ld_f16(const uint16_t *x, float *y, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = ember_ld_f16(x[i]); }
"""


def _lib(native_f16: bool):
    if ckernels.compiler() is None:
        pytest.skip("no C compiler")
    src = ("" if native_f16 else "#define EMBER_NO_FLOAT16\n") + "#include <stdint.h>\n#include <string.h>\n"
    sigs = {k: [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64] for k in ("st_bf16", "st_f16", "ld_bf16", "ld_f16")}
    lib = ckernels.load(src + lowp.C_PRELUDE + _ROUNDTRIP, "lowp_test", sigs)
    assert lib is not None
    return lib


def _floats() -> np.ndarray:
    """Random float32 bit patterns (every exponent), exact ties of both types, specials."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    ties_bf16 = (bits & np.uint32(0xFFFF0000)) | np.uint32(0x8000)  # halfway between two bfloat16
    ties_f16 = (rng.integers(1, 65504, 20_000).astype(np.float16).astype(np.float32).view(np.uint32)) | np.uint32(
        0x1000
    )  # halfway between two float16 (normal range)
    sub = rng.integers(0, 2**23, 20_000, dtype=np.uint64).astype(np.uint32)  # float32 denormals
    x = np.concatenate([bits, ties_bf16, ties_f16, sub, sub | np.uint32(0x80000000)]).view(np.float32)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 3e38]
    return np.concatenate([x, np.array(special, np.float32), np.uint32([0x7F800001, 0xFFFFFFFF]).view(np.float32)])


def _call(lib, fn, x, out_dtype):
    y = np.empty(x.shape, out_dtype)
    getattr(lib, fn)(x.ctypes.data, y.ctypes.data, x.size)
    return y


@pytest.mark.parametrize("native_f16", [True, False], ids=["Float16", "bits"])
def test_stores_round_to_nearest_even_bit_for_bit(native_f16):
    lib = _lib(native_f16)
    x = _floats()
    for fn, np_dt in (("st_bf16", ml_dtypes.bfloat16), ("st_f16", np.float16)):
        with np.errstate(all="ignore"):
            want = np.asarray(x, np_dt)
        got = _call(lib, fn, x, np.uint16).view(np_dt)
        nan = np.isnan(x)
        np.testing.assert_array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16), err_msg=fn)
        assert np.isnan(got[nan].astype(np.float32)).all()  # NaN stays NaN (never infinity)
        assert (np.signbit(got[nan].astype(np.float32)) == np.signbit(x[nan])).all()


@pytest.mark.parametrize("native_f16", [True, False], ids=["Float16", "bits"])
def test_loads_are_exact(native_f16):
    lib = _lib(native_f16)
    h = np.arange(2**16, dtype=np.uint16)
    for fn, np_dt in (("ld_bf16", ml_dtypes.bfloat16), ("ld_f16", np.float16)):
        want = h.view(np_dt).astype(np.float32)
        got = _call(lib, fn, h, np.float32)
        nan = np.isnan(want)
        np.testing.assert_array_equal(got[~nan], want[~nan], err_msg=fn)
        assert np.isnan(got[nan]).all()


def _mlp(x, w1, b1, w2):
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2).tanh() * 2


CASES = {
    "chain": (lambda x: ((x * 2 + 1).tanh() * x).exp().sigmoid() - x.abs().sqrt() * 0.5, [(64, 100)]),
    "softmax": (lambda x: F.softmax(x * 2, -1), [(64, 100)]),
    "log_softmax": (lambda x: F.log_softmax(x, -1) + 1, [(32, 50)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (100,), w, b).relu(), [(64, 100), (100,), (100,)]),
    "col_mean": (lambda x: (x * x).mean(0) * 3, [(64, 100)]),
    "mlp": (_mlp, [(16, 32), (64, 32), (64,), (8, 64)]),
}


def _run(fn, shapes, dtype):
    rng = np.random.default_rng(1)
    arrs = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in shapes]
    ts = [ember.tensor(a).to(dtype) for a in arrs]
    cf = ember.compile(fn)
    got = cf(*ts)
    want = fn(*ts)
    ref = fn(*[ember.tensor(t.float().numpy().astype(np.float64)) for t in ts])  # the inputs as rounded
    (entry,) = cf.cache.values()
    return got, want, ref, entry


@pytest.mark.parametrize("dt", sorted(LOW))
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_matches_eager_within_low_precision_ulps(name, dt):
    dtype, _, eps = LOW[dt]
    fn, shapes = CASES[name]
    got, want, ref, entry = _run(fn, shapes, dtype)
    assert got.dtype == want.dtype == dtype
    groups = [s[1] for s in entry.steps if s[0] == "group"]
    assert groups and all(str(g.dtype).endswith(dt) for g in groups)  # it fused, in the 2-byte dtype
    g, w, r = got.float().numpy(), want.float().numpy(), ref.numpy()
    # A few ulps of the float64 result (eager rounds after every op, a fused loop once); the MLP's
    # second GEMM sums 64 hidden values rounded to the 2-byte type (eager rounds them twice: after
    # the GEMM and after gelu; compiled once), so its bound is looser.
    tol = (16 if name == "mlp" else 4) * eps * np.maximum(np.abs(r), 1.0)
    # Eager rounds after each of the MLP's 5 ops: 11 ulps on the C kernels, 17.5 on the NumPy
    # fallback (EMBER_CKERNELS=0, gelu and tanh rounded from float32 separately).
    eager_tol = tol * (1.5 if name == "mlp" else 1.0)
    assert (np.abs(g - r) <= tol).all() and (np.abs(w - r) <= eager_tol).all()


def _graph(fn, *args):
    g = IRGraph.from_traced(trace(fn, args, {}))
    run_passes(g)
    return g


@pytest.mark.parametrize("dt", sorted(LOW))
def test_low_precision_gemm_widens_to_float32_and_fuses_its_epilogue(dt):
    dtype, np_dt, eps = LOW[dt]
    x, w, b, r = (ember.randn(*s).to(dtype) for s in ((3, 8, 16), (4, 16), (4,), (4,)))

    def f(x, w, b, r):
        return (F.linear(x, w, b) * 2).relu() + r

    g = _graph(f, x, w, b, r)
    (group,) = fuse(g)
    assert group.kind == "gemm" and [n.op for n in group.nodes] == ["linear", "mul", "relu", "add"]
    src = render_c([group])
    assert f"ga[q] = ember_ld_{lowp.LOW[dt]}(in0[q])" in src and "ember_gemm_float(" in src and "free(ga)" in src
    got, want = ember.compile(f)(x, w, b, r).float().numpy(), f(x, w, b, r).float().numpy()
    assert (np.abs(got - want) <= 4 * eps * np.maximum(np.abs(want), 1)).all()


@pytest.mark.parametrize("dt", sorted(LOW))
def test_generated_c_reads_16_bits_and_computes_in_float(dt):
    x = ember.randn(8, 8).to(LOW[dt][0])
    groups = fuse(_graph(lambda x: F.softmax(x.exp() * 2, -1), x))
    src = render_c(groups)
    assert "const uint16_t * restrict in0" in src and f"ember_ld_{lowp.LOW[dt]}(in0[i])" in src
    assert f"ember_st_{lowp.LOW[dt]}(" in src and "exp_f32(" in src and "double acc" in src


def _nvrtc():
    nvrtc = pytest.importorskip("ember.compile.codegen.nvrtc")
    if nvrtc.load() is None:
        pytest.skip("libnvrtc not installed (pip install nvidia-cuda-nvrtc-cu12)")
    return nvrtc


@pytest.mark.parametrize("dt", sorted(LOW))
@pytest.mark.parametrize("name", ["chain", "softmax", "layer_norm", "col_mean", "mlp"])
def test_cuda_kernels_of_low_precision_groups_compile_with_nvrtc(name, dt):
    nvrtc = _nvrtc()
    fn, shapes = CASES[name]
    groups = fuse(_graph(fn, *[ember.randn(*s).to(LOW[dt][0]) for s in shapes]))
    assert groups
    src = render_cuda(groups)
    assert "const uint16_t *__restrict__ in0" in src
    ptx = nvrtc.compile_ptx(src)
    assert all(f".entry ember_k{g.id}(" in ptx for g in groups)


@pytest.mark.gpu
@pytest.mark.parametrize("dt", sorted(LOW))
@pytest.mark.parametrize("name", ["chain", "softmax", "col_mean"])
def test_cuda_low_precision_kernels_launch_and_match_c(name, dt):
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception:
        pytest.skip("no CUDA device")
    fn, shapes = CASES[name]
    x = ember.tensor((np.random.default_rng(2).standard_normal((1000, 37)) * 0.5).astype(np.float32)).to(LOW[dt][0])
    g = _graph(fn, x)
    (gr,) = fuse(g)
    mod = cp.RawModule(code=render_cuda([gr]))
    ins = [cp.asarray(x.numpy().view(np.uint16))]
    outs = [cp.empty(o.shape, cp.uint16) for o in gr.outputs]
    n, (rows, cols) = gr.numel(), gr.rows_cols()
    threads = {"row": rows, "col": cols}.get(gr.kind, n)
    sizes = (cp.int64(n), cp.int64(rows), cp.int64(cols))
    mod.get_function(f"ember_k{gr.id}")(((threads + 255) // 256,), (256,), (*ins, *outs, *sizes))
    got = cp.asnumpy(outs[0]).view(LOW[dt][1]).astype(np.float64)
    want = ember.compile(fn)(x).float().numpy()  # the C kernel: same float32 math, one rounding
    np.testing.assert_allclose(got, want, rtol=2 * LOW[dt][2], atol=1e-6)


def test_autocast_inside_a_compiled_function_is_captured_and_its_casts_fuse():
    ember.manual_seed(0)
    lin, ln = ember.nn.Linear(16, 8), ember.nn.LayerNorm(16)

    def f(x):
        with ember.autocast("cpu", dtype=ember.bfloat16):
            return F.gelu(lin(ln(x))) * 2 + 1

    x = ember.randn(32, 16)
    cf = ember.compile(f)
    with ember.no_grad():
        got, want = cf(x), f(x)
    assert got.dtype == want.dtype == ember.bfloat16
    (entry,) = cf.cache.values()
    groups = [s[1] for s in entry.steps if s[0] == "group"]
    assert any(n.op == "to" for g in groups for n in g.nodes)  # layer_norm's result cast in its row loop
    w = want.float().numpy()
    assert (np.abs(got.float().numpy() - w) <= 4 * 2.0**-8 * np.maximum(np.abs(w), 1)).all()


def test_autocast_around_a_compiled_function_is_a_guard():
    lin = ember.nn.Linear(8, 4)
    cf = ember.compile(lambda x: lin(x).relu())
    x = ember.randn(4, 8)
    with ember.no_grad():
        with ember.autocast("cpu", dtype=ember.bfloat16):
            assert cf(x).dtype == ember.bfloat16
        assert cf(x).dtype == ember.float32
        with ember.autocast("cpu", dtype=ember.float16):
            assert cf(x).dtype == ember.float16
    assert len(cf.cache) == 3


def test_gradients_through_a_compiled_bfloat16_module_match_eager():
    ember.manual_seed(0)
    m = ember.nn.Sequential(ember.nn.Linear(32, 64), ember.nn.GELU(), ember.nn.LayerNorm(64), ember.nn.Linear(64, 8))
    m = m.to(ember.bfloat16)
    x = ember.randn(16, 32).bfloat16()

    def grads(mod):
        for p in m.parameters():
            p.grad = None
        mod(x).float().pow(2).sum().backward()
        return [p.grad for p in m.parameters()]

    want, got = grads(m), grads(ember.compile(m))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == ember.bfloat16
        g, w = g.float().numpy(), w.float().numpy()
        assert np.abs(g - w).max() <= 8 * 2.0**-8 * max(np.abs(w).max(), 1)  # a few ulps of the largest
