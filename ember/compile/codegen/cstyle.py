"""The renderer shared by C and CUDA: one op -> expression table, one loop-body builder.

A fused group (see ``passes/fusion.py``) renders as a function over flat arrays of ``n``
elements: each input is read once per element, each op becomes one local
(``const float t3 = expf(t2);``), each output is written once. A language subclass supplies
the function's frame (signature and loop) and the spelling of math functions.

Example:
    >>> from ember.compile.codegen.cstyle import EXPRESSIONS
    >>> EXPRESSIONS["add"]
    '({0} + {1})'
"""

from __future__ import annotations

import math

from ember.compile.codegen import lowp

__all__ = ["EXPRESSIONS", "MATH", "CStyleRenderer", "supported", "access"]

# {i}: the i-th argument; {T}: the element type; names in MATH are spelled per language/dtype.
EXPRESSIONS = {
    "add": "({0} + {1})",
    "sub": "({0} - {1})",
    "mul": "({0} * {1})",
    "div": "({0} / {1})",
    "neg": "(-{0})",
    "abs": "FABS({0})",
    "exp": "EXP({0})",
    "expm1": "EXPM1({0})",
    "log": "LOG({0})",
    "log1p": "LOG1P({0})",
    "sqrt": "SQRT({0})",
    "rsqrt": "(({T})1 / SQRT({0}))",
    "reciprocal": "(({T})1 / {0})",
    "sin": "SIN({0})",
    "cos": "COS({0})",
    "tanh": "TANH({0})",
    "sigmoid": "(({T})1 / (({T})1 + EXP(-{0})))",
    "relu": "({0} < ({T})0 ? ({T})0 : {0})",  # NaN stays NaN, as in PyTorch
    # NaN-propagating, as two selects (GCC does not vectorize a select on ``a != a || a > b``)
    "maximum": "(({1} != {1}) ? {1} : (({0} <= {1}) ? {1} : {0}))",
    "minimum": "(({1} != {1}) ? {1} : (({0} >= {1}) ? {1} : {0}))",
    "pow": "POW({0}, {1})",
    "erf": "ERF({0})",
    # gelu(x, approximate="none") and its tanh approximation (key "gelu_tanh")
    "gelu": "(({T})0.5 * {0} * (({T})1 + ERF({0} * ({T})0.70710678118654752)))",
    "gelu_tanh": "(({T})0.5 * {0} * (({T})1 + TANH(({T})0.79788456080286536 * ({0} + ({T})0.044715 * {0} * {0} * {0}))))",
    # gelu_backward(g, x): g * (Phi(x) + x phi(x)), and the derivative of the tanh form
    "gelu_backward": "({0} * ((({T})0.5 * (({T})1 + ERF({1} * ({T})0.70710678118654752)))"
    " + {1} * EXP(({T})-0.5 * {1} * {1}) * ({T})0.39894228040143268))",
    "gelu_backward_tanh": "({0} * (({T})0.5 * (({T})1 + TANH(({T})0.79788456080286536 * ({1} + ({T})0.044715 * {1} * {1}"
    " * {1}))) + ({T})0.5 * {1} * (({T})1 - TANH(({T})0.79788456080286536 * ({1} + ({T})0.044715 * {1} * {1} * {1}))"
    " * TANH(({T})0.79788456080286536 * ({1} + ({T})0.044715 * {1} * {1} * {1}))) * ({T})0.79788456080286536"
    " * (({T})1 + ({T})0.134145 * {1} * {1})))",
}
MATH = ("FABS", "EXPM1", "EXP", "LOG1P", "LOG", "SQRT", "SIN", "COS", "TANH", "POW", "ERF")


def access(shape: tuple, full: tuple) -> tuple | None:
    """How a loop over ``full`` reads an input of ``shape``: ``("full",)``, ``("suffix", m)``
    (``in[i % m]``), ``("prefix", m)`` (``in[i / m]``), ``("scalar",)``, or None."""
    shape, full = tuple(shape), tuple(full)
    if shape == full:
        return ("full",)
    if _prod(shape) == 1 and len(shape) <= len(full):
        return ("scalar",)
    if len(shape) > len(full):
        return None
    s = (1,) * (len(full) - len(shape)) + shape
    k = 0
    while k < len(s) and s[k] == 1:
        k += 1
    if s[k:] == full[k:]:
        return ("suffix", _prod(full[k:]))
    k = len(s)
    while k > 0 and s[k - 1] == 1:
        k -= 1
    if s[:k] == full[:k]:
        return ("prefix", _prod(full[k:]))
    return None


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def supported(op: str) -> bool:
    return op in EXPRESSIONS


class CStyleRenderer:
    """Turns a fused group into source text; subclasses give the frame (C loop, CUDA grid)."""

    suffix = {"float32": "f", "float64": ""}

    def ctype(self, dtype) -> str:
        """The type a group of ``dtype`` computes in (bfloat16/float16: float)."""
        return {"float32": "float", "float64": "double"}[lowp.compute_name(dtype)]

    def storage(self, dtype) -> str:
        """The element type of a group's buffers (bfloat16/float16: their 16 bits)."""
        return "uint16_t" if lowp.is_low(dtype) else self.ctype(dtype)

    def math(self, name: str, dtype) -> str:
        return name.lower() + self.suffix[lowp.compute_name(dtype)]

    def store(self, node, dst: str, value: str) -> str:
        """The statement writing ``node``'s compute value ``value`` to ``dst`` (rounded to
        bfloat16/float16 when ``node`` is of those types)."""
        return f"{dst} = {lowp.store(node.dtype, value)};"

    def literal(self, x, T: str) -> str:
        x = float(x)
        if math.isnan(x):
            return "NAN" if T == "float" else "(double)NAN"
        if math.isinf(x):
            return ("" if x > 0 else "-") + "INFINITY"
        return f"(({T}){x!r})"

    def expr(self, n, args: list, T: str, dtype) -> str:
        """The expression of the elementwise node ``n`` over argument expressions ``args``."""
        args = [a if isinstance(a, str) else self.literal(a, T) for a in args]
        if n.op == "to":  # within the float32 family: rounds to a 2-byte type, else exact
            return lowp.load(n.dtype, lowp.store(n.dtype, args[0]))
        key = n.op + "_tanh" if n.op.startswith("gelu") and n.params.get("approximate") == "tanh" else n.op
        e = EXPRESSIONS[key].format(*args, T=T)
        for m in MATH:
            e = e.replace(f"{m}(", f"{self.math(m, dtype)}(")
        return e

    def load(self, group, a, reduced: bool = False) -> str:
        """How the loop reads external input ``a``: by ``i`` (flat), ``r``/``j`` (row, column),
        widened to the compute type."""
        return lowp.load(a.dtype, self._index(group, a, reduced))

    def _index(self, group, a, reduced: bool = False) -> str:
        k = group.inputs.index(a)
        rows, cols = group.rows_cols()
        if reduced:  # a per-row (row groups) or per-column (col groups) value
            return f"in{k}[0]" if a.numel() == 1 else f"in{k}[{'r' if group.kind == 'row' else 'j'}]"
        acc = access(a.shape, group.shape)
        if acc[0] == "full":
            return f"in{k}[i]"
        if acc[0] == "scalar":
            return f"in{k}[0]"
        m = acc[1]
        inner = cols if group.kind == "row" else self.inner(group)  # the j loop's length, if any
        if acc[0] == "suffix":
            return f"in{k}[j]" if m == inner else f"in{k}[i % {m}]"
        return f"in{k}[r]" if m == inner else f"in{k}[i / {m}]"

    def inner(self, group) -> int | None:
        """For an elementwise or gemm group read with broadcasts: the length of the inner loop
        of a (r, j) loop nest (the broadcast's period), so that a bias reads ``in[j]`` and a row
        statistic ``in[r]`` instead of a division per element; None for one flat loop."""
        if group.kind == "gemm":
            return group.shape[-1]
        if group.kind != "elementwise":
            return None
        periods = [access(a.shape, group.shape) for a in group.inputs]
        periods = [p[1] for p in periods if p[0] in ("suffix", "prefix")]
        return periods[0] if periods else None

    def ref(self, group, names: dict, a, reduced: bool = False) -> str:
        if a in names:
            return names[a]
        return self.load(group, a, reduced)

    def stmts(self, group, nodes, names: dict) -> list[str]:
        """One statement per node of ``nodes`` (elementwise ops; reduced nodes read per row);
        names each node ``t<k>`` in ``names``."""
        T = self.ctype(group.dtype)
        lines = []
        for n in nodes:
            if n in names:  # a GEMM's result: already named by the frame
                continue
            red = n in group.reduced
            args = [self.ref(group, names, a, red) if hasattr(a, "kind") else a for a in n.args]
            name = f"t{group.nodes.index(n)}"
            lines.append(f"const {T} {name} = ({T}){self.expr(n, args, T, group.dtype)};")
            names[n] = name
        return lines

    def body(self, group, names: dict) -> list[str]:
        """The statements of an elementwise group's loop body (``names``: input -> load)."""
        return self.stmts(group, group.nodes, names)

    def passes(self, group) -> tuple:
        """A row group's schedule: ``(before, passes)``; ``before`` are reduced nodes needing
        no pass; each pass is ``(elementwise nodes, reductions, elementwise outputs, reduced
        nodes after it)``, every elementwise node recomputed in each pass that needs it."""
        outs = set(group.outputs)
        elem = [n for n in group.nodes if n not in group.reduced]
        sinks: dict = {}
        for n in group.reductions:
            sinks.setdefault(group.lvl(n) - 1, []).append(n)
        for n in elem:
            if n in outs:
                sinks.setdefault(group.lvl(n), []).append(n)
        last = max(sinks, default=-1)
        before = [n for n in group.nodes if n in group.reduced and group.lvl(n) == 0]
        result = []
        for p in range(last + 1):
            need: set = set()
            stack = [a for s in sinks.get(p, ()) for a in (s.inputs() if s in group.reductions else [s])]
            while stack:
                a = stack.pop()
                if a in need or a not in group.level or a in group.reduced:
                    continue
                need.add(a)
                stack.extend(a.inputs())
            nodes = [n for n in elem if n in need]
            reds = [n for n in sinks.get(p, ()) if n in group.reductions]
            writes = [n for n in sinks.get(p, ()) if n not in group.reductions]
            after = [n for n in group.nodes if n in group.reduced and group.lvl(n) == p + 1]
            result.append((nodes, reds, writes, after))
        return before, result

    def reduce_init(self, group, n) -> list[str]:
        T, k = self.ctype(group.dtype), group.nodes.index(n)
        if n.op == "sum":
            return [f"double acc{k} = 0;"]
        return [f"{T} acc{k} = -INFINITY;", f"int nan{k} = 0;"]

    def reduce_step(self, group, n, names) -> list[str]:
        k = group.nodes.index(n)
        v = self.ref(group, names, n.args[0])
        if n.op == "sum":
            return [f"acc{k} += {v};"]
        return [f"acc{k} = {v} > acc{k} ? {v} : acc{k};", f"nan{k} |= ({v} != {v});"]

    def reduce_clauses(self, group, n) -> str:
        k = group.nodes.index(n)
        return f"reduction(+:acc{k})" if n.op == "sum" else f"reduction(max:acc{k}) reduction(|:nan{k})"

    def reduce_final(self, group, n, names) -> str:
        T, k = self.ctype(group.dtype), group.nodes.index(n)
        names[n] = f"t{k}"
        if n.op == "sum":
            return f"const {T} t{k} = ({T})acc{k};"
        nan = "NAN" if T == "float" else "(double)NAN"
        return f"const {T} t{k} = nan{k} ? {nan} : acc{k};"

    def row_body(self, group, simd: str) -> list[str]:
        """The statements of one row (index ``r``) of a row group; ``simd`` is the line put
        before each inner loop (``{clauses}`` is replaced by the reductions' clauses)."""
        before, passes = self.passes(group)
        names: dict = {}
        lines = self.stmts(group, before, names) + self._reduced_writes(group, before, names)
        for nodes, reds, writes, after in passes:
            for n in reds:
                lines += self.reduce_init(group, n)
            pragma = simd.format(clauses=" ".join(self.reduce_clauses(group, n) for n in reds))
            inner = dict(names)
            body = ["const int64_t i = r * cols + j;"] + self.stmts(group, nodes, inner)
            for n in reds:
                body += self.reduce_step(group, n, inner)
            body += [self.store(n, f"out{group.outputs.index(n)}[i]", inner[n]) for n in writes]
            if not reds and not writes:
                nodes = []
            elif pragma:
                lines.append(pragma)
            if reds or writes:
                lines.append("for (int64_t j = 0; j < cols; j++) {")
            lines += ["    " + b for b in body]
            lines.append("}")
            for n in after:
                if n in group.reductions:
                    lines.append(self.reduce_final(group, n, names))
                else:
                    lines += self.stmts(group, [n], names)
            lines += self._reduced_writes(group, after, names)
        return lines

    def _reduced_writes(self, group, nodes, names) -> list[str]:
        return [self.store(n, f"out{group.outputs.index(n)}[r]", names[n]) for n in nodes if n in group.outputs]

    def render(self, group, name: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _name(dtype) -> str:
    return str(dtype).replace("ember.", "")
