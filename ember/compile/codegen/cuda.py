"""CUDA renderer: the same fused groups as ``c.py``, one thread per element, from the same
expression table (``cstyle.EXPRESSIONS``).

Example:
    >>> from ember.compile.codegen.cuda import CudaRenderer
    >>> CudaRenderer().math("EXP", "float32")
    'expf'
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = ["CudaRenderer", "PRELUDE"]

PRELUDE = "#define INFINITY __int_as_float(0x7f800000)\n#define NAN __int_as_float(0x7fffffff)\n"


class CudaRenderer(CStyleRenderer):
    def render(self, group, name: str) -> str:
        T = self.ctype(group.dtype)
        params = [f"const {T} *__restrict__ in{i}" for i in range(len(group.inputs))]
        params += [f"{T} *__restrict__ out{i}" for i in range(len(group.outputs))]
        params.append("long long n")
        names = {x: f"in{i}[i]" for i, x in enumerate(group.inputs)}
        body = self.body(group, names)
        red = group.reduction
        if red is not None:  # one thread per row
            body += [f"out{i}[i] = {names[o]};" for i, o in enumerate(group.outputs) if o is not red]
            body.append(f"acc += {names[red.args[0]]};")
            inner = "\n".join("        " + s for s in body)
            return (
                f'extern "C" __global__ void {name}({", ".join(params)}, long long rows, long long cols) {{\n'
                f"    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
                f"    if (r >= rows) return;\n    double acc = 0;\n"
                f"    for (long long i = r * cols; i < (r + 1) * cols; i++) {{\n{inner}\n    }}\n"
                f"    out{group.outputs.index(red)}[r] = ({T})acc;\n}}\n"
            )
        body += [f"out{i}[i] = {names[o]};" for i, o in enumerate(group.outputs)]
        inner = "\n".join("    " + s for s in body)
        return (
            f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
            f"    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            f"    if (i >= n) return;\n{inner}\n}}\n"
        )
