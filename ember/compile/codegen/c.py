"""C renderer: one function per fused group, an OpenMP-parallel outer loop over blocks (only
when the array is big enough to pay for threads) and a SIMD inner loop.

Example:
    >>> from ember.compile.codegen.c import CRenderer, PRELUDE
    >>> "omp.h" in PRELUDE
    True
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = ["CRenderer", "PRELUDE", "BLOCK", "PARALLEL_MIN"]

BLOCK = 4096  # elements per inner loop: a few pages, long enough to vectorize
PARALLEL_MIN = 1 << 17  # below this, waking threads costs more than the loop itself

PRELUDE = """#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
"""


class CRenderer(CStyleRenderer):
    def render(self, group, name: str) -> str:
        T = self.ctype(group.dtype)
        params = [f"const {T} *restrict in{i}" for i in range(len(group.inputs))]
        params += [f"{T} *restrict out{i}" for i in range(len(group.outputs))]
        params.append("int64_t n")
        names = {x: f"in{i}[i]" for i, x in enumerate(group.inputs)}
        body = self.body(group, names)
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
