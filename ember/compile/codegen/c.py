"""C renderer: one function per fused group, an OpenMP-parallel outer loop over blocks (only
when the array is big enough to pay for threads) and a SIMD inner loop.

Example:
    >>> from ember.compile.codegen.c import CRenderer, prelude
    >>> "exp_f32" in prelude()
    True
"""

from __future__ import annotations

from pathlib import Path

from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = ["CRenderer", "prelude", "BLOCK", "PARALLEL_MIN"]

BLOCK = 4096  # elements per inner loop: a few pages, long enough to vectorize
PARALLEL_MIN = 1 << 17  # below this, waking threads costs more than the loop itself

# float32 exp/tanh/erf from the hand kernels' mathf.c: branch-free, so loops over them vectorize
# (glibc's expf/tanhf are scalar calls; tanhf alone costs ~40 ns an element).
_FAST_F32 = {"EXP": "exp_f32", "TANH": "tanh_f32", "ERF": "erf_f32"}


def prelude() -> str:
    """The C text before the kernels: headers and the vectorizable float32 math functions."""
    from ember.backends import ckernels

    return (Path(ckernels.__file__).parent / "mathf.c").read_text()


class CRenderer(CStyleRenderer):
    def math(self, name: str, dtype) -> str:
        if str(dtype).endswith("float32") and name in _FAST_F32:
            return _FAST_F32[name]
        return super().math(name, dtype)

    def render(self, group, name: str) -> str:
        T = self.ctype(group.dtype)
        params = [f"const {T} *restrict in{i}" for i in range(len(group.inputs))]
        params += [f"{T} *restrict out{i}" for i in range(len(group.outputs))]
        params.append("int64_t n")
        names = {x: f"in{i}[i]" for i, x in enumerate(group.inputs)}
        body = self.body(group, names)
        if group.reduction is not None:
            return self._render_reduction(group, name, params, names, body)
        body += [f"out{i}[i] = {names[o]};" for i, o in enumerate(group.outputs)]
        inner = "\n".join("            " + s for s in body)
        return (
            f"void {name}({', '.join(params)}) {{\n"
            f"    const int64_t nb = (n + {BLOCK} - 1) / {BLOCK};\n"
            f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN})\n"
            f"    for (int64_t b = 0; b < nb; b++) {{\n"
            f"        const int64_t end = (b + 1) * {BLOCK} < n ? (b + 1) * {BLOCK} : n;\n"
            f"        #pragma omp simd\n"
            f"        for (int64_t i = b * {BLOCK}; i < end; i++) {{\n{inner}\n        }}\n"
            f"    }}\n}}\n"
        )

    def _render_reduction(self, group, name, params, names, body) -> str:
        """Rows in parallel; each row's loop computes the chain and sums it (in double)."""
        T = self.ctype(group.dtype)
        red = group.reduction
        body += [f"out{i}[i] = {names[o]};" for i, o in enumerate(group.outputs) if o is not red]
        body.append(f"acc += {names[red.args[0]]};")
        k = group.outputs.index(red)
        inner = "\n".join("            " + s for s in body)
        params = params + ["int64_t rows", "int64_t cols"]
        return (
            f"void {name}({', '.join(params)}) {{\n"
            f"    #pragma omp parallel for schedule(static) if(n >= {PARALLEL_MIN})\n"
            f"    for (int64_t r = 0; r < rows; r++) {{\n"
            f"        double acc = 0;\n"
            f"        #pragma omp simd reduction(+:acc)\n"
            f"        for (int64_t i = r * cols; i < (r + 1) * cols; i++) {{\n{inner}\n        }}\n"
            f"        out{k}[r] = ({T})acc;\n"
            f"    }}\n}}\n"
        )
