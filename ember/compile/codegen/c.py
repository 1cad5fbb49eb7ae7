"""C renderer: one self-contained C function per fused group.

**The kernel contract** (``program.py`` and ``runtime.py`` call kernels through it; stable):
:meth:`CRenderer.render` ``(group, name)`` returns the text of::

    void NAME(const T *restrict in0, ..., const T *restrict in{I-1},
              T *restrict out0, ..., T *restrict out{O-1},
              int64_t n, int64_t rows, int64_t cols)

where ``T`` is ``float`` or ``double`` (the group's dtype), ``in<k>`` is ``group.inputs[k]``
(C-contiguous, its own shape: it may broadcast), ``out<k>`` is ``group.outputs[k]`` (C-contiguous,
of that node's shape), and the sizes are :func:`kernel_sizes` ``(group)``. :func:`kernel_args`
gives the argument list as ``(C type, name)`` pairs. The text needs :func:`prelude` before it
(headers, the vectorizable float32 math).

Loop nests by group kind (``passes/fusion.py``):

- elementwise: blocks of 4096 elements, ``#pragma omp parallel for`` over blocks when
  ``n >= PARALLEL_MIN`` (threads only where the work pays), ``#pragma omp simd`` inside;
- row: rows in parallel (same threshold, and more than one row); in each row, one SIMD loop per
  pass with the reductions as ``reduction(...)`` clauses (sums in double, max NaN-propagating);
- col: blocks of 256 columns in parallel; each block sums its columns over all rows (in double,
  SIMD over the columns), then runs the per-column consumers.

Example:
    >>> from ember.compile.codegen.c import CRenderer, prelude
    >>> "exp_f32" in prelude()
    True
"""

from __future__ import annotations

from pathlib import Path

from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = ["CRenderer", "prelude", "kernel_args", "kernel_sizes", "BLOCK", "COL_BLOCK", "PARALLEL_MIN"]

BLOCK = 4096  # elements per inner loop: a few pages, long enough to vectorize
COL_BLOCK = 256  # columns per block of a col group (its accumulators live on the stack)
PARALLEL_MIN = 1 << 17  # below this, waking threads costs more than the loop itself

# float32 exp/tanh/erf from the hand kernels' mathf.c: branch-free, so loops over them vectorize
# (glibc's expf/tanhf are scalar calls; tanhf alone costs ~40 ns an element).
_FAST_F32 = {"EXP": "exp_f32", "TANH": "tanh_f32", "ERF": "erf_f32"}


def prelude() -> str:
    """The C text before the kernels: headers and the vectorizable float32 math functions."""
    from ember.backends import ckernels

    return (Path(ckernels.__file__).parent / "mathf.c").read_text()


def kernel_args(group) -> list:
    """The kernel's parameters in order, as ``(C type, name)`` pairs (see the module docstring)."""
    T = {"float32": "float", "float64": "double"}[str(group.dtype).replace("ember.", "")]
    args = [(f"const {T} *restrict", f"in{i}") for i in range(len(group.inputs))]
    args += [(f"{T} *restrict", f"out{i}") for i in range(len(group.outputs))]
    return args + [("int64_t", "n"), ("int64_t", "rows"), ("int64_t", "cols")]


def kernel_sizes(group) -> tuple:
    """The values of ``n, rows, cols`` for ``group``."""
    return (group.numel(), *group.rows_cols())


def _indent(lines, k: int) -> str:
    return "\n".join(" " * k + s for s in lines)


class CRenderer(CStyleRenderer):
    def math(self, name: str, dtype) -> str:
        if str(dtype).endswith("float32") and name in _FAST_F32:
            return _FAST_F32[name]
        return super().math(name, dtype)

    def render(self, group, name: str) -> str:
        head = f"void {name}({', '.join(f'{t} {a}' for t, a in kernel_args(group))}) {{\n"
        if group.kind == "row":
            return head + self._row(group)
        if group.kind == "col":
            return head + self._col(group)
        names: dict = {}
        body = self.body(group, names)
        body += [f"out{i}[i] = {names[o]};" for i, o in enumerate(group.outputs)]
        return head + (
            "    (void)rows; (void)cols;\n"
            f"    const int64_t nb = (n + {BLOCK} - 1) / {BLOCK};\n"
            f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN})\n"
            f"    for (int64_t b = 0; b < nb; b++) {{\n"
            f"        const int64_t end = (b + 1) * {BLOCK} < n ? (b + 1) * {BLOCK} : n;\n"
            f"        #pragma omp simd\n"
            f"        for (int64_t i = b * {BLOCK}; i < end; i++) {{\n{_indent(body, 12)}\n        }}\n"
            f"    }}\n}}\n"
        )

    def _row(self, group) -> str:
        lines = self.row_body(group, "#pragma omp simd {clauses}")
        return (
            f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN} && rows > 1)\n"
            f"    for (int64_t r = 0; r < rows; r++) {{\n{_indent(lines, 8)}\n    }}\n}}\n"
        )

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
        body += [f"out{outs.index(n)}[i] = {names[n]};" for n in elem if n in outs]
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
        post += [f"out{outs.index(n)}[j] = {red_names[n]};" for n in group.reduced if n in outs]
        assert all(a in members or a in group.inputs for n in group.nodes for a in n.inputs())
        return (
            f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN} && cols > {COL_BLOCK})\n"
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
