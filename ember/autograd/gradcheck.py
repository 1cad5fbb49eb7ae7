"""Numerical gradient checks: ``gradcheck`` (first order) and ``gradgradcheck`` (second order).

The analytical Jacobian comes from one vector-Jacobian product per output element; the numerical
one from central differences on float64 inputs. They must agree within ``atol + rtol * |num|``.

Example:
    >>> import ember
    >>> x = ember.randn(3, dtype=ember.float64, requires_grad=True)
    >>> ember.autograd.gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]


class GradcheckError(RuntimeError):
    """Analytical and numerical gradients disagree."""


def _tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _outputs(func, inputs):
    from ember.tensor import Tensor

    return tuple(o for o in _tuple(func(*inputs)) if isinstance(o, Tensor) and o._data.dtype.kind in "fV")


def _numerical_jacobian(func, inputs, diff_idx, eps):
    """J[i][j]: d output_j / d input_i, flattened, by central differences."""
    from ember.autograd.grad_mode import no_grad

    jac = []
    with no_grad():
        outs0 = _outputs(func, inputs)
        for i in diff_idx:
            x = inputs[i]
            data = x._data  # perturbed in place through multi-indices: reshape may copy a view
            cols = [np.zeros((data.size, o._data.size)) for o in outs0]
            for k, pos in enumerate(np.ndindex(data.shape)):
                orig = data[pos].item()
                data[pos] = orig + eps
                plus = [o._data.astype(np.float64).reshape(-1).copy() for o in _outputs(func, inputs)]
                data[pos] = orig - eps
                minus = [o._data.astype(np.float64).reshape(-1).copy() for o in _outputs(func, inputs)]
                data[pos] = orig
                for c, p, m in zip(cols, plus, minus):
                    c[k] = (p - m) / (2 * eps)
            jac.append(cols)
    return jac


def _analytical_jacobian(func, inputs, diff_idx):
    from ember.autograd import grad
    from ember.ops.creation import zeros_like

    outs = _outputs(func, inputs)
    diff_inputs = [inputs[i] for i in diff_idx]
    jac = [[np.zeros((inputs[i]._data.size, o._data.size)) for o in outs] for i in diff_idx]
    for j, o in enumerate(outs):
        if not o._requires_grad:
            continue
        for k in range(o._data.size):
            g = zeros_like(o)
            g._data.reshape(-1)[k] = 1
            got = grad(o, diff_inputs, g, retain_graph=True, allow_unused=True)
            for a, gi in enumerate(got):
                if gi is not None:
                    jac[a][j][:, k] = gi._data.astype(np.float64).reshape(-1)
    return jac


def gradcheck(
    func, inputs, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True, **_ignored
) -> bool:
    """Compare analytical gradients of ``func`` at ``inputs`` with finite differences.

    Inputs that require grad should be float64 for the default tolerances to be meaningful.
    """
    from ember.tensor import Tensor

    inputs = _tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x._requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck expects at least one input tensor to require gradient")
    for i in diff_idx:
        if inputs[i]._data.dtype != np.float64:
            import warnings

            warnings.warn(
                f"Input #{i} requires gradient and is not a double precision floating point; "
                "gradcheck may fail from round-off",
                stacklevel=2,
            )
    num = _numerical_jacobian(func, inputs, diff_idx, eps)
    ana = _analytical_jacobian(func, inputs, diff_idx)
    for a, i in enumerate(diff_idx):
        for j, (n, an) in enumerate(zip(num[a], ana[a])):
            if not np.allclose(an, n, rtol=rtol, atol=atol, equal_nan=True):
                worst = np.unravel_index(np.argmax(np.abs(an - n)), n.shape) if n.size else ()
                msg = (
                    f"Jacobian mismatch for output {j} with respect to input {i},\n"
                    f"numerical:{n}\nanalytical:{an}\n(largest difference at {worst})"
                )
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def gradgradcheck(
    func,
    inputs,
    grad_outputs=None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    **_ignored,
) -> bool:
    """Check second derivatives: gradcheck of the vector-Jacobian product of ``func``."""
    from ember.autograd import grad
    from ember.autograd.grad_mode import enable_grad
    from ember.ops.creation import randn
    from ember.tensor import Tensor

    inputs = _tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x._requires_grad]
    outs = _outputs(func, inputs)
    if grad_outputs is None:
        grad_outputs = tuple(randn(o.shape, dtype=o.dtype, requires_grad=True) for o in outs)
    grad_outputs = _tuple(grad_outputs)
    n_in = len(inputs)

    def vjp(*args):
        xs, gos = args[:n_in], args[n_in:]
        # The numerical pass runs under no_grad; the vector-Jacobian product needs the graph.
        with enable_grad():
            return _vjp(xs, gos)

    def _vjp(xs, gos):
        outs = _outputs(func, xs)
        pairs = [(o, g) for o, g in zip(outs, gos) if o._requires_grad]
        got = grad(
            [o for o, _ in pairs],
            [xs[i] for i in diff_idx],
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
        return tuple(g for g in got if g is not None)

    return gradcheck(vjp, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception)
