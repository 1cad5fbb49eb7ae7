"""C renderer: one self-contained C function per fused group.

**The kernel contract** (``program.py`` and ``runtime.py`` call kernels through it; stable):
:meth:`CRenderer.render` ``(group, name)`` returns the text of::

    void NAME(const T *restrict in0, ..., const T *restrict in{I-1},
              T *restrict out0, ..., T *restrict out{O-1},
              int64_t n, int64_t rows, int64_t cols)

(no ``restrict`` for elementwise groups: the memory plan may give an output its input's
buffer, each element read before it is written), where ``T`` is ``float`` or ``double`` (the
buffer's dtype; ``uint16_t`` for bfloat16/float16, whose bits ``lowp.py`` converts), ``in<k>`` is ``group.inputs[k]``
(C-contiguous, its own shape: it may broadcast), ``out<k>`` is ``group.outputs[k]`` (C-contiguous,
of that node's shape), and the sizes are :func:`kernel_sizes` ``(group)``. :func:`kernel_args`
gives the argument list as ``(C type, name)`` pairs. The text needs :func:`prelude` before it
(headers, the vectorizable float32 math).

Loop nests by group kind (``passes/fusion.py``):

- elementwise: blocks of 4096 elements starting on a cache line of the first full-size input
  (block 0 is the few elements before it: NumPy's big arrays start 16 bytes into a line, and a
  vector load split over two lines halves the loop's speed), ``#pragma omp parallel for`` over
  blocks when ``n >= PARALLEL_MIN`` (threads only where the work pays: ``ember_nt`` gives one
  thread per ``PARALLEL_MIN / 2`` elements, at most ``omp_get_max_threads()``), ``#pragma omp
  simd`` inside; outputs of ``STREAM_MIN`` elements or more are streamed out (non-temporal);
- row: rows in parallel (from ``ROW_PARALLEL_MIN`` elements, and more than one row); in each row, one SIMD loop per
  pass with the reductions as ``reduction(...)`` clauses (sums in double, max NaN-propagating);
  a single long row runs each pass's loop in parallel instead;
- col: blocks of 256 columns in parallel (from ``ROW_PARALLEL_MIN`` elements); each block sums its columns over all rows (in double,
  SIMD over the columns), then runs the per-column consumers;
- gemm: ``cblas_?gemm`` (NumPy's OpenBLAS, pointers set by ``ember_set_blas(sgemm, dgemm)``
  after loading: see ``blas.py``) writes the product into an output buffer, then the epilogue
  (bias, activation, residual add...) runs over it in one elementwise pass, in place.

Example:
    >>> from ember.compile.codegen.c import CRenderer, prelude
    >>> "exp_f32" in prelude()
    True
"""

from __future__ import annotations

from pathlib import Path

from ember.compile.codegen import lowp
from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = [
    "CRenderer", "prelude", "kernel_args", "kernel_sizes", "BLOCK", "COL_BLOCK", "PARALLEL_MIN", "ROW_PARALLEL_MIN",
    "STREAM_MIN",
]  # fmt: skip

BLOCK = 4096  # elements per inner loop: a few pages, long enough to vectorize
COL_BLOCK = 256  # columns per block of a col group (its accumulators live on the stack)
PARALLEL_MIN = 1 << 17  # below this, waking threads costs more than the loop itself
# Row and column loops, like the hand row kernels (softmax, layer_norm), go parallel only from 4M
# elements: libgomp's spinning idle threads otherwise take the cores from the next GEMM's
# OpenBLAS threads (BENCHMARKS.md, "Threads").
ROW_PARALLEL_MIN = 1 << 22

# float32 exp/tanh/erf from the hand kernels' mathf.c: branch-free, so loops over them vectorize
# (glibc's expf/tanhf are scalar calls; tanhf alone costs ~40 ns an element).
_FAST_F32 = {"EXP": "exp_f32", "TANH": "tanh_f32", "ERF": "erf_f32"}


# Outputs of this many elements or more are written with streaming (non-temporal) stores: a
# block computed in L1, then streamed out, so that they do not evict the cache. Below it, plain
# stores: glibc's memcpy (NumPy's copy) itself streams only above its x86_non_temporal_threshold
# (288 MiB on the AMD EPYC dev machine); at 64 MiB, plain stores time as the copy while streaming
# was 1.07x slower into a written buffer and 1.2-1.3x into fresh pages (the page fault zeroes the
# page through the cache, and the streaming store must then evict those lines).
STREAM_MIN = 1 << 26
_STREAM = r"""
#if (defined(__AVX512F__) || defined(__AVX__)) && !(defined(__GNUC__) && !defined(__clang__))
#include <immintrin.h>
#endif
/* Threads for n elements, as the hand kernels choose them: up to omp_get_max_threads()
 * (ember.set_num_threads / OMP_NUM_THREADS), one per minimum / 2 elements. */
#ifdef _OPENMP
static inline int ember_nt(int64_t n, int64_t minimum) {
    int64_t t = omp_get_max_threads(), k = n / (minimum / 2);
    return (int)(k < 1 ? 1 : (k < t ? k : t));
}
#else
#define ember_nt(n, minimum) 1
#endif
#define EMBER_STREAM(T, V, W, STORE)                                                   \
    static inline void ember_stream_##T(T *restrict dst, const T *restrict src, int64_t m) { \
        int64_t k = 0;                                                                  \
        while (k < m && ((uintptr_t)(dst + k) % (W * sizeof(T)))) { dst[k] = src[k]; k++; } \
        for (; k + W <= m; k += W) STORE;                                               \
        for (; k < m; k++) dst[k] = src[k];                                             \
    }
#if (defined(__AVX512F__) || defined(__AVX__)) && defined(__GNUC__) && !defined(__clang__)
/* GCC: its builtins for the two instructions used (an unaligned load is a may_alias vector read,
 * as in GCC's headers): parsing <immintrin.h> is most of a small library's compile time. */
#if defined(__AVX512F__)
#define EMBER_VB 64
#define EMBER_NT_float __builtin_ia32_movntps512
#define EMBER_NT_double __builtin_ia32_movntpd512
#else
#define EMBER_VB 32
#define EMBER_NT_float __builtin_ia32_movntps256
#define EMBER_NT_double __builtin_ia32_movntpd256
#endif
typedef float ember_vfloat __attribute__((vector_size(EMBER_VB)));
typedef double ember_vdouble __attribute__((vector_size(EMBER_VB)));
typedef float ember_ufloat __attribute__((vector_size(EMBER_VB), may_alias, aligned(1)));
typedef double ember_udouble __attribute__((vector_size(EMBER_VB), may_alias, aligned(1)));
EMBER_STREAM(float, ember_vfloat, EMBER_VB / 4, EMBER_NT_float(dst + k, (ember_vfloat)*(const ember_ufloat *)(src + k)))
EMBER_STREAM(double, ember_vdouble, EMBER_VB / 8, EMBER_NT_double(dst + k, (ember_vdouble)*(const ember_udouble *)(src + k)))
#define EMBER_FENCE() __builtin_ia32_sfence()
#elif defined(__AVX512F__)
EMBER_STREAM(float, __m512, 16, _mm512_stream_ps(dst + k, _mm512_loadu_ps(src + k)))
EMBER_STREAM(double, __m512d, 8, _mm512_stream_pd(dst + k, _mm512_loadu_pd(src + k)))
#define EMBER_FENCE() _mm_sfence()
#elif defined(__AVX__)
EMBER_STREAM(float, __m256, 8, _mm256_stream_ps(dst + k, _mm256_loadu_ps(src + k)))
EMBER_STREAM(double, __m256d, 4, _mm256_stream_pd(dst + k, _mm256_loadu_pd(src + k)))
#define EMBER_FENCE() _mm_sfence()
#else
static inline void ember_stream_float(float *restrict d, const float *restrict s, int64_t m) { memcpy(d, s, m * 4); }
static inline void ember_stream_double(double *restrict d, const double *restrict s, int64_t m) { memcpy(d, s, m * 8); }
#define EMBER_FENCE() ((void)0)
#endif
"""


# The GEMM of a gemm group: NumPy's OpenBLAS cblas_?gemm (64-bit integers), set after loading.
_BLAS = r"""
typedef void (*ember_sgemm_t)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t,
                              const float *, int64_t, float, float *, int64_t);
typedef void (*ember_dgemm_t)(int, int, int, int64_t, int64_t, int64_t, double, const double *, int64_t,
                              const double *, int64_t, double, double *, int64_t);
static ember_sgemm_t ember_gemm_float;
static ember_dgemm_t ember_gemm_double;
void ember_set_blas(void *s, void *d) { ember_gemm_float = (ember_sgemm_t)s; ember_gemm_double = (ember_dgemm_t)d; }
"""


def prelude() -> str:
    """The C text before the kernels: headers, the vectorizable float32 math functions and the
    streaming-store helpers ``ember_stream_float``/``ember_stream_double``."""
    from ember.backends import ckernels

    return (Path(ckernels.__file__).parent / "mathf.c").read_text() + _STREAM + _BLAS + lowp.C_PRELUDE


def kernel_args(group) -> list:
    """The kernel's parameters in order, as ``(C type, name)`` pairs (see the module docstring)."""
    T = CRenderer().storage  # float, double, or uint16_t (bfloat16/float16 bits), per buffer
    r = "" if group.kind == "elementwise" else " restrict"  # elementwise groups may run in place
    args = [(f"const {T(a.dtype)} *{r}", f"in{i}") for i, a in enumerate(group.inputs)]
    args += [(f"{T(o.dtype)} *{r}", f"out{i}") for i, o in enumerate(group.outputs)]
    return args + [("int64_t", "n"), ("int64_t", "rows"), ("int64_t", "cols")]


def kernel_sizes(group) -> tuple:
    """The values of ``n, rows, cols`` for ``group``."""
    return (group.numel(), *group.rows_cols())


def _block_setup(anchor: str) -> str:
    """The block count of a flat loop: block 0 runs up to the first 64-byte boundary of
    ``anchor`` (``h`` elements), then blocks of ``BLOCK`` elements start on cache lines."""
    return (
        f"    const int64_t h0 = (int64_t)(((64 - (uintptr_t){anchor} % 64) % 64) / sizeof(*{anchor}));\n"
        "    const int64_t h = h0 < n ? h0 : n;  /* elements before the first aligned block */\n"
        f"    const int64_t nb = 1 + (n - h + {BLOCK} - 1) / {BLOCK};\n"
    )


_BOUNDS = (
    f"        const int64_t start = b ? h + (b - 1) * {BLOCK} : 0;\n"
    f"        const int64_t end = !b ? h : (start + {BLOCK} < n ? start + {BLOCK} : n);\n"
)


def _outlined(group, name: str, setup: str, var: str, count: str, loop: str, tail: str = "") -> str:
    """``name``: ``setup``, then ``for var < count: loop`` in threads from ``PARALLEL_MIN``
    elements, else in one call of ``name_loop``. The loop is a function of its own (never
    inlined: one copy of its code): an OpenMP ``if`` clause that is false still sets up a team
    of one thread, about 0.5 us a call, which a step of many small parameter updates pays per
    kernel."""
    params = ", ".join(f"{t} {a}" for t, a in kernel_args(group))
    args = ", ".join(a for _, a in kernel_args(group))
    return (
        f"static __attribute__((noinline)) void {name}_loop({params}, int64_t h, int64_t {var}0, int64_t {var}1) {{\n"
        f"    (void)h; (void)rows; (void)cols;\n"
        f"    for (int64_t {var} = {var}0; {var} < {var}1; {var}++) {{\n{loop}    }}\n}}\n"
        f"void {name}({params}) {{\n{setup}"
        f"    const int64_t cnt = {count};\n"
        f"    if (n >= {PARALLEL_MIN}) {{\n"
        f"        #pragma omp parallel for schedule(static) num_threads(ember_nt(n, {PARALLEL_MIN}))\n"
        f"        for (int64_t {var} = 0; {var} < cnt; {var}++) {name}_loop({args}, h, {var}, {var} + 1);\n"
        f"    }} else {{\n        {name}_loop({args}, h, 0, cnt);\n    }}\n{tail}}}\n"
    )


def _indent(lines, k: int) -> str:
    return "\n".join(" " * k + s for s in lines)


class CRenderer(CStyleRenderer):
    def math(self, name: str, dtype) -> str:
        if lowp.compute_name(dtype) == "float32" and name in _FAST_F32:
            return _FAST_F32[name]
        return super().math(name, dtype)

    def render(self, group, name: str) -> str:
        head = f"void {name}({', '.join(f'{t} {a}' for t, a in kernel_args(group))}) {{\n"
        if group.kind == "row":
            return head + self._row(group)
        if group.kind == "col":
            return head + self._col(group)
        names: dict = {}
        pre = ""
        if group.kind == "gemm":
            pre, names = self._gemm(group)
        body = self.body(group, names)
        outs = group.outputs
        direct = body + [self.store(o, f"out{k}[i]", names[o]) for k, o in enumerate(outs)]
        inner = self.inner(group)
        if group.kind == "elementwise":  # no prologue: the loop nest is outlined (_outlined)
            return self._elementwise(group, name, direct, body, names, inner)
        # a GEMM group: the epilogue over rows of the product (``inner`` is its row length)
        free = "    free(ga);\n" if "malloc(" in pre else ""  # a 2-byte GEMM's float32 scratch
        return (
            head
            + pre
            + (
                "    (void)rows; (void)cols;\n"
                f"    const int64_t nr = n / {inner};\n"
                f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN}) num_threads(ember_nt(n, {PARALLEL_MIN}))\n"
                f"    for (int64_t r = 0; r < nr; r++) {{\n"
                f"        #pragma omp simd\n"
                f"        for (int64_t j = 0; j < {inner}; j++) {{\n"
                f"            const int64_t i = r * {inner} + j;\n{_indent(direct, 12)}\n        }}\n"
                f"    }}\n{free}}}\n"
            )
        )

    def _elementwise(self, group, name: str, direct: list, body: list, names: dict, inner) -> str:
        """An elementwise group: the loop over rows (broadcast reads) or aligned blocks, in a
        function of its own called once (one thread) or per row/block from a parallel loop."""
        if inner is not None:  # broadcast reads: rows of ``inner`` elements, j indexes the row
            loop = (
                "        #pragma omp simd\n"
                f"        for (int64_t j = 0; j < {inner}; j++) {{\n"
                f"            const int64_t i = r * {inner} + j;\n{_indent(direct, 12)}\n        }}\n"
            )
            return _outlined(group, name, "    const int64_t h = 0;\n", "r", f"n / {inner}", loop)
        T = self.ctype(group.dtype)
        outs = group.outputs
        setup = _block_setup(self._anchor(group))
        if any(self.storage(o.dtype) != T for o in outs):  # 2-byte stores: no streaming; blocks
            loop = (
                _BOUNDS + "        #pragma omp simd\n"
                f"        for (int64_t i = start; i < end; i++) {{\n{_indent(direct, 12)}\n        }}\n"
            )
            return _outlined(group, name, setup, "b", "nb", loop)
        staged = body + [f"buf{k}[i - start] = {names[o]};" for k, o in enumerate(outs)]
        bufs = [f"{T} buf{k}[{BLOCK}] __attribute__((aligned(64)));" for k in range(len(outs))]
        stream = [f"ember_stream_{T}(out{k} + start, buf{k}, end - start);" for k in range(len(outs))]
        loop = (
            _BOUNDS + f"        if (n < {STREAM_MIN}) {{\n"
            f"            #pragma omp simd\n"
            f"            for (int64_t i = start; i < end; i++) {{\n{_indent(direct, 16)}\n            }}\n"
            f"        }} else {{  /* compute a block in L1, then stream it out */\n"
            f"{_indent(bufs, 12)}\n"
            f"            #pragma omp simd\n"
            f"            for (int64_t i = start; i < end; i++) {{\n{_indent(staged, 16)}\n            }}\n"
            f"{_indent(stream, 12)}\n"
            f"        }}\n"
        )
        return _outlined(group, name, setup, "b", "nb", loop, f"    if (n >= {STREAM_MIN}) EMBER_FENCE();\n")

    @staticmethod
    def _anchor(group) -> str:
        """The buffer whose alignment the blocks follow: the first input read in full (a vector
        load split over two cache lines costs two; NumPy's large arrays start 16 bytes into a
        line), else the first output."""
        for k, a in enumerate(group.inputs):
            if tuple(a.shape) == tuple(group.shape):
                return f"in{k}"
        return "out0"

    def _gemm(self, group) -> tuple:
        """The BLAS call into the buffer of an output, and the name of the GEMM's value."""
        T = self.ctype(group.dtype)
        node, a, b, tb, bias = group.gemm
        outs = group.outputs
        dest = outs.index(node) if node in outs else 0  # every output has the GEMM's shape
        k = a.shape[-1]
        ldb = k if tb else group.shape[-1]
        pa, pb = group.inputs.index(a), group.inputs.index(b)
        A, B = f"in{pa}", f"in{pb}"
        value = "gm[i]" if bias is None else f"(gm[i] + {lowp.load(bias.dtype, f'in{group.inputs.index(bias)}[j]')})"
        if lowp.is_low(group.dtype):  # 2-byte operands: widened into float32 scratch for sgemm
            na, nb = f"rows * {k}", f"{k} * cols"
            call = (
                f"    float *ga = malloc(sizeof(float) * (rows * cols + (rows + cols) * {k}));\n"
                "    if (!ga) abort();  /* no memory for the float32 copies: fail loudly, never silently */\n"
                f"    float *gb = ga + {na}, *gm = gb + {nb};  /* A, B, then the product */\n"
                f"    for (int64_t q = 0; q < {na}; q++) ga[q] = {lowp.load(a.dtype, f'{A}[q]')};\n"
                f"    for (int64_t q = 0; q < {nb}; q++) gb[q] = {lowp.load(b.dtype, f'{B}[q]')};\n"
                f"    ember_gemm_float(101, 111, {112 if tb else 111}, rows, cols, {k}, 1, ga, {k}, gb, {ldb}, 0, gm, cols);\n"
            )
            return call, {node: value}
        call = (
            f"    {T} *gm = out{dest};  /* the GEMM's result, then the epilogue in place, one pass */\n"
            f"    ember_gemm_{T}(101, 111, {112 if tb else 111}, rows, cols, {k}, 1, {A}, {k}, "
            f"{B}, {ldb}, 0, gm, cols);\n"
        )
        return call, {node: value}

    def _row(self, group) -> str:
        # one long row (a mean over everything): its passes run in parallel instead of its rows
        # Shapes are static per compiled graph: choose the parallel level here. A parallel
        # construct left in the row loop, even with if(0), costs microseconds per row and pass.
        P, rows, n = ROW_PARALLEL_MIN, group.rows_cols()[0], group.numel()
        inner = f"#pragma omp parallel for simd {{clauses}} num_threads(ember_nt(n, {P}))"
        lines = self.row_body(group, inner if rows == 1 and n >= P else "#pragma omp simd {clauses}")
        outer = f"    #pragma omp parallel for schedule(static) num_threads(ember_nt(n, {P}))\n"
        return (
            outer if rows > 1 and n >= P else ""
        ) + f"    for (int64_t r = 0; r < rows; r++) {{\n{_indent(lines, 8)}\n    }}\n}}\n"

    def _col(self, group) -> str:
        T = self.ctype(group.dtype)
        members = set(group.nodes)
        elem = [n for n in group.nodes if n not in group.reduced]
        outs = group.outputs
        names: dict = {}
        body = self.stmts(group, elem, names)
        for n in group.reductions:
            k = group.nodes.index(n)
            v = self.ref(group, names, n.args[0])
            body.append(f"acc{k}[j - jb] += {v};")
        body += [self.store(n, f"out{outs.index(n)}[i]", names[n]) for n in elem if n in outs]
        inits = [f"double acc{group.nodes.index(n)}[{COL_BLOCK}];" for n in group.reductions]
        zero = [f"acc{group.nodes.index(n)}[j - jb] = 0;" for n in group.reductions]
        post = []
        red_names: dict = {}
        for n in group.nodes:
            if n in group.reductions:
                k = group.nodes.index(n)
                post.append(f"const {T} t{k} = ({T})acc{k}[j - jb];")
                red_names[n] = f"t{k}"
            elif n in group.reduced:
                post += self.stmts(group, [n], red_names)
        post += [self.store(n, f"out{outs.index(n)}[j]", red_names[n]) for n in group.reduced if n in outs]
        assert all(a in members or a in group.inputs for n in group.nodes for a in n.inputs())
        return (
            f"    #pragma omp parallel for schedule(static) if(n >= {ROW_PARALLEL_MIN} && cols > {COL_BLOCK}) "
            f"num_threads(ember_nt(n, {ROW_PARALLEL_MIN}))\n"
            f"    for (int64_t jb = 0; jb < cols; jb += {COL_BLOCK}) {{\n"
            f"        const int64_t je = jb + {COL_BLOCK} < cols ? jb + {COL_BLOCK} : cols;\n"
            f"{_indent(inits, 8)}\n"
            f"        for (int64_t j = jb; j < je; j++) {{\n{_indent(zero, 12)}\n        }}\n"
            f"        for (int64_t r = 0; r < rows; r++) {{\n"
            f"            #pragma omp simd\n"
            f"            for (int64_t j = jb; j < je; j++) {{\n"
            f"                const int64_t i = r * cols + j;\n{_indent(body, 16)}\n            }}\n"
            f"        }}\n"
            f"        for (int64_t j = jb; j < je; j++) {{\n{_indent(post, 12)}\n        }}\n"
            f"    }}\n}}\n"
        )
