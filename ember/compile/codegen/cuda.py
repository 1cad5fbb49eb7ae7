"""CUDA renderer: the same fused groups as ``c.py``, from the same expression table and the same
pass schedule (``cstyle.CStyleRenderer``): one thread per element (elementwise groups), per row
(row groups: the row's passes run in that thread) or per column (col groups).

Every kernel takes ``(in..., out..., long long n, long long rows, long long cols)``, as in C.

Example:
    >>> from ember.compile.codegen.cuda import CudaRenderer
    >>> CudaRenderer().math("EXP", "float32")
    'expf'
"""

from __future__ import annotations

from ember.compile.codegen import lowp
from ember.compile.codegen.cstyle import CStyleRenderer

__all__ = ["CudaRenderer", "PRELUDE"]

PRELUDE = (
    "#define INFINITY __int_as_float(0x7f800000)\n#define NAN __int_as_float(0x7fffffff)\ntypedef long long int64_t;\n"
    + lowp.CUDA_PRELUDE
)


def _indent(lines, k: int) -> str:
    return "\n".join(" " * k + s for s in lines)


class CudaRenderer(CStyleRenderer):
    def inner(self, group):
        return None  # one thread per element: broadcasts read by ``i % m`` and ``i / m``

    def render(self, group, name: str) -> str:
        T = self.ctype(group.dtype)
        params = [f"const {self.storage(a.dtype)} *__restrict__ in{i}" for i, a in enumerate(group.inputs)]
        params += [f"{self.storage(o.dtype)} *__restrict__ out{i}" for i, o in enumerate(group.outputs)]
        params += ["long long n", "long long rows", "long long cols"]
        head = f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
        tid = "(long long)blockIdx.x * blockDim.x + threadIdx.x"
        if group.kind == "row":
            lines = self.row_body(group, "")
            return head + f"    const long long r = {tid};\n    if (r >= rows) return;\n{_indent(lines, 4)}\n}}\n"
        if group.kind == "col":
            return head + f"    const long long j = {tid};\n    if (j >= cols) return;\n" + self._col(group) + "}\n"
        names: dict = {}
        pre = []
        if group.kind == "gemm":  # one thread per output element: its dot product, then the epilogue
            node, a, b, tb, bias = group.gemm
            k, pa, pb = a.shape[-1], group.inputs.index(a), group.inputs.index(b)
            bk = "c * {k} + k" if tb else "k * cols + c"
            pre = [
                "const long long r = i / cols, c = i % cols;",
                f"{T} gm = 0;",
                f"for (long long k = 0; k < {k}; k++) gm += {lowp.load(a.dtype, f'in{pa}[r * {k} + k]')}"
                f" * {lowp.load(b.dtype, f'in{pb}[{bk.format(k=k)}]')};",
            ]
            bias_v = None if bias is None else lowp.load(bias.dtype, f"in{group.inputs.index(bias)}[c]")
            names[node] = "gm" if bias is None else f"(gm + {bias_v})"
        body = pre + self.body(group, names)
        body += [self.store(o, f"out{i}[i]", names[o]) for i, o in enumerate(group.outputs)]
        return head + f"    const long long i = {tid};\n    if (i >= n) return;\n{_indent(body, 4)}\n}}\n"

    def _col(self, group) -> str:
        T = self.ctype(group.dtype)
        outs = group.outputs
        elem = [n for n in group.nodes if n not in group.reduced]
        names: dict = {}
        body = ["const long long i = r * cols + j;"] + self.stmts(group, elem, names)
        init = []
        for n in group.reductions:
            k = group.nodes.index(n)
            init.append(f"double acc{k} = 0;")
            body.append(f"acc{k} += {self.ref(group, names, n.args[0])};")
        body += [self.store(n, f"out{outs.index(n)}[i]", names[n]) for n in elem if n in outs]
        post, red = [], {}
        for n in group.nodes:
            if n in group.reductions:
                k = group.nodes.index(n)
                post.append(f"const {T} t{k} = ({T})acc{k};")
                red[n] = f"t{k}"
            elif n in group.reduced:
                post += self.stmts(group, [n], red)
        post += [self.store(n, f"out{outs.index(n)}[j]", red[n]) for n in group.reduced if n in outs]
        return (
            f"{_indent(init, 4)}\n    for (long long r = 0; r < rows; r++) {{\n{_indent(body, 8)}\n    }}\n"
            f"{_indent(post, 4)}\n"
        )
