"""``ember demo``: the lecture's example f(x1, x2) = ln(x1) + x1*x2 - sin(x2), end to end.

Builds the forward graph, runs reverse-mode autodiff (which records the backward graph), prints
the value and gradients, and writes both graphs as pictures.
"""

from __future__ import annotations

import math
from pathlib import Path

import ember

__all__ = ["lecture_function", "run", "main"]


def lecture_function(x1, x2):
    """f(x1, x2) = ln(x1) + x1 * x2 - sin(x2)."""
    return ember.log(x1) + x1 * x2 - ember.sin(x2)


def run(out_dir: Path, x1_value: float = 2.0, x2_value: float = 5.0, fmt: str = "svg") -> dict:
    """Evaluate the example, differentiate it and draw its graphs; returns the numbers and files."""
    from ember import viz

    x1 = ember.tensor(x1_value, requires_grad=True)
    x2 = ember.tensor(x2_value, requires_grad=True)
    y = lecture_function(x1, x2)
    params = {"x1": x1, "x2": x2}
    forward_src = viz.forward_dot(y, params=params)
    backward_src = viz.backward_dot(y, inputs=[x1, x2], params=params)
    g1, g2 = ember.autograd.grad(y, [x1, x2])

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        viz.render(forward_src, out_dir / f"forward_graph.{fmt}"),
        viz.render(backward_src, out_dir / f"backward_graph.{fmt}"),
    ]
    expected = (1 / x1_value + x2_value, x1_value - math.cos(x2_value))
    return {"value": y.item(), "grad_x1": g1.item(), "grad_x2": g2.item(), "expected": expected, "files": files}


def main(args) -> int:
    res = run(Path(args.out), args.x1, args.x2, args.format)
    print("f(x1, x2) = ln(x1) + x1*x2 - sin(x2)")
    print(f"  at x1 = {args.x1}, x2 = {args.x2}")
    print(f"  f        = {res['value']:.6f}")
    print(f"  df/dx1   = {res['grad_x1']:.6f}   (1/x1 + x2     = {res['expected'][0]:.6f})")
    print(f"  df/dx2   = {res['grad_x2']:.6f}   (x1 - cos(x2)  = {res['expected'][1]:.6f})")
    for f in res["files"]:
        print(f"  wrote {f}")
    return 0
