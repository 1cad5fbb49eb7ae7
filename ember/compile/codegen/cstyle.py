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

__all__ = ["EXPRESSIONS", "MATH", "CStyleRenderer", "supported"]

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
}
MATH = ("FABS", "EXPM1", "EXP", "LOG1P", "LOG", "SQRT", "SIN", "COS", "TANH", "POW", "ERF")


def supported(op: str) -> bool:
    return op in EXPRESSIONS


class CStyleRenderer:
    """Turns a fused group into source text; subclasses give the frame (C loop, CUDA grid)."""

    suffix = {"float32": "f", "float64": ""}

    def ctype(self, dtype) -> str:
        return {"float32": "float", "float64": "double"}[_name(dtype)]

    def math(self, name: str, dtype) -> str:
        return name.lower() + self.suffix[_name(dtype)]

    def literal(self, x, T: str) -> str:
        x = float(x)
        if math.isnan(x):
            return "NAN" if T == "float" else "(double)NAN"
        if math.isinf(x):
            return ("" if x > 0 else "-") + "INFINITY"
        return f"(({T}){x!r})"

    def body(self, group, names: dict) -> list[str]:
        """One statement per op of ``group``; ``names`` maps each external input to its load."""
        T = self.ctype(group.dtype)
        lines = []
        for i, n in enumerate(group.nodes):
            if n is group.reduction:
                continue
            args = [names[a] if hasattr(a, "kind") else self.literal(a, T) for a in n.args]
            expr = EXPRESSIONS[n.op].format(*args, T=T)
            for m in MATH:
                expr = expr.replace(f"{m}(", f"{self.math(m, group.dtype)}(")
            name = f"t{i}"
            names[n] = name
            lines.append(f"const {T} {name} = ({T}){expr};")
        return lines

    def render(self, group, name: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _name(dtype) -> str:
    return str(dtype).replace("ember.", "")
