"""Multi-tensor ("foreach") ops: one op call over a list of tensors, as ``torch._foreach_*``.

Each op takes lists of tensors (and scalars, a list of scalars, or a list of tensors as the
other operand) and runs one loop over their arrays, instead of one Python-level op per tensor.
Optimizers use them for ``foreach=True``; they are ops like any other: each in-place one is one
primitive applied through ``ember.ops.dispatch.apply`` to the flattened lists (the written tensors
first, ``n_written`` of them), so the profiler times it and a captured training step records it.

When gradients must be recorded (grad mode on and some input requires grad), each op falls back
to the per-tensor Tensor op, which records the graph (and refuses in-place writes to leaves
that require grad, as PyTorch does).

Example:
    >>> import ember
    >>> xs = [ember.ones(2), ember.ones(3)]
    >>> _ = ember._foreach_mul_(xs, 0.5)
    >>> ember._foreach_add_(xs, [ember.ones(2), ember.ones(3)], alpha=2)[1]
    tensor([2.5000, 2.5000, 2.5000])
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from ember.autograd.node import tick
from ember.ops._base import Tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = [
    "_foreach_abs",
    "_foreach_abs_",
    "_foreach_add",
    "_foreach_add_",
    "_foreach_addcdiv",
    "_foreach_addcdiv_",
    "_foreach_addcmul",
    "_foreach_addcmul_",
    "_foreach_copy_",
    "_foreach_div",
    "_foreach_div_",
    "_foreach_lerp",
    "_foreach_lerp_",
    "_foreach_maximum",
    "_foreach_maximum_",
    "_foreach_mul",
    "_foreach_mul_",
    "_foreach_neg",
    "_foreach_neg_",
    "_foreach_sqrt",
    "_foreach_sqrt_",
    "_foreach_sub",
    "_foreach_sub_",
    "_foreach_zero_",
]


# --------------------------------------------------------------------------- argument handling
def _check_list(op: str, tensors) -> list:
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"{op}(): argument 'self' must be tuple of Tensors, not {type(tensors).__name__}")
    if len(tensors) == 0:
        raise RuntimeError(f"{op}: Tensor list must have at least one tensor.")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}(): expected a list of Tensors, but one element is {type(t).__name__}")
    return tensors


def _others(op: str, n: int, other) -> list:
    """The other operand per tensor: a list of tensors or scalars, or one value repeated."""
    if isinstance(other, (list, tuple)):
        if len(other) != n:
            kind = "tensors" if other and isinstance(other[0], Tensor) else "scalars"
            if kind == "tensors":
                raise RuntimeError(f"{op}: Tensor lists must have the same number of tensors, got {n} and {len(other)}")
            raise RuntimeError(
                f"{op}: Tensor list must have same number of elements as scalar list, got {n} and {len(other)}"
            )
        return [o if isinstance(o, Tensor) else float(o) if not isinstance(o, (bool, int)) else o for o in other]
    if isinstance(other, Tensor) and other.ndim == 1 and op.startswith(("_foreach_addc",)):
        # addcmul/addcdiv take their per-tensor values as a 1-D tensor of scalars too
        return [float(v) for v in other.tolist()]
    value = other if isinstance(other, Tensor) else (float(other) if not isinstance(other, (bool, int)) else other)
    return [value] * n


def _recording(*lists) -> bool:
    """Whether some tensor in the lists requires grad while grad mode is on (then use Tensor ops)."""
    if not grad_state.enabled:
        return False
    for lst in lists:
        for t in lst:
            if isinstance(t, Tensor) and t._requires_grad:
                return True
    return False


def _per_tensor(self: list, *lists) -> bool:
    """Whether to run the per-tensor Tensor ops: to record gradients, or for non-float tensors
    (whose promotion and casting errors the Tensor ops implement)."""
    for t in self:
        if t._data.dtype.kind not in "fc":
            return True
    return _recording(self, *lists)


def _arr(x):
    return x._data if isinstance(x, Tensor) else x


def _writable(op: str, t: Tensor):
    a = t._data
    if type(a) is np.ndarray and not a.flags.writeable:
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor refers to a single "
            "memory location (or the memory is read-only). Please clone() the tensor before performing the operation."
        )
    return a


def _done(ts) -> None:
    """Count the in-place write of every tensor of ``ts`` but the first (apply bumps that one,
    an in-place primitive's result), all with one stamp of the graph clock: one op wrote them."""
    stamp = None
    for t in ts[1:]:
        vc = t._vc
        if vc is not None and len(vc) == 2:  # counted and stamped before: Tensor._bump_version inline
            if stamp is None:
                stamp = tick()
            vc[0] += 1
            vc[1] = stamp
        else:
            t._bump_version()


def _list_prim(name: str, impl) -> Primitive:
    """An in-place multi-tensor primitive: ``impl(*tensors, n_written, **params)`` writes the
    first ``n_written`` tensors (``apply`` returns the first; capture records all of them)."""
    return Primitive(name, None, impl, inplace=True)


def _run(prim: Primitive, self: list, *lists, **params) -> list:
    """Apply ``prim`` to ``self`` (written) followed by the other lists, flattened; returns ``self``."""
    flat = list(self)
    for lst in lists:
        flat.extend(lst)
    apply(prim, *flat, n_written=len(self), **params)
    _done(self)
    return self


# --------------------------------------------------------------------------- binary ops
_PY_OPS = {np.add: operator.add, np.subtract: operator.sub, np.multiply: operator.mul}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_EXACT = 1 << 24  # ints up to this are exact in float32, as NumPy converts them


def _binary(name: str, ufunc, method: str):
    op_ = f"_foreach_{name}_"
    op = f"_foreach_{name}"
    takes_alpha = name in ("add", "sub")

    def inplace(self: list, other, *, alpha=1) -> list:
        self = _check_list(op_, self)
        others = _others(op_, len(self), other)
        if _per_tensor(self, others):
            for t, o in zip(self, others):
                getattr(t, method + "_")(o, alpha=alpha) if takes_alpha else getattr(t, method + "_")(o)
            return self
        return _run(prim, self, others, alpha=alpha)

    pyop = _PY_OPS.get(ufunc)

    def impl(*xs, n_written, alpha):
        for t, o in zip(xs[:n_written], xs[n_written:]):
            a = t._data
            if pyop is not None and o.__class__ is int and alpha.__class__ is int and a.__class__ is np.ndarray:
                v = o * alpha
                dt = a.dtype
                if not a.ndim and (dt is _F32 or dt is _F64) and -_EXACT <= v <= _EXACT:
                    # A 0-d float and a small int (an optimizer's step count + 1): NumPy's scalar
                    # handling costs ~2 us a call. In double, then rounded once to the array's
                    # dtype, this is NumPy's correctly rounded float32/float64 result.
                    try:
                        a[()] = pyop(a.item(), v)
                    except ValueError:  # read-only
                        _writable(op_, t)
                        raise
                    continue
            a = _writable(op_, t)
            od = _arr(o)
            if alpha != 1:
                od = od * alpha
            ufunc(a, od, out=a, casting="unsafe")

    prim = _list_prim(op_, impl)

    def outofplace(self: list, other, *, alpha=1) -> list:
        # Tensor ops give PyTorch's dtype promotion, devices and (when needed) the graph.
        self = _check_list(op, self)
        others = _others(op, len(self), other)
        if takes_alpha:
            return [getattr(t, method)(o, alpha=alpha) for t, o in zip(self, others)]
        return [getattr(t, method)(o) for t, o in zip(self, others)]

    inplace.__name__, outofplace.__name__ = op_, op
    inplace.__doc__ = f"``self[i].{method}_(other[i])`` for every i, in one op; returns ``self``."
    outofplace.__doc__ = f"``[self[i].{method}(other[i]) for i]`` as one op."
    return inplace, outofplace


_foreach_add_, _foreach_add = _binary("add", np.add, "add")
_foreach_sub_, _foreach_sub = _binary("sub", np.subtract, "sub")
_foreach_mul_, _foreach_mul = _binary("mul", np.multiply, "mul")
_foreach_div_, _foreach_div = _binary("div", np.true_divide, "div")
_foreach_maximum_, _foreach_maximum = _binary("maximum", np.maximum, "maximum")


# --------------------------------------------------------------------------- unary ops
def _unary(name: str, ufunc):
    op_ = f"_foreach_{name}_"
    op = f"_foreach_{name}"

    def inplace(self: list) -> list:
        self = _check_list(op_, self)
        if _per_tensor(self):
            for t in self:
                getattr(t, name + "_")()
            return self
        return _run(prim, self)

    def impl(*xs, n_written):
        for t in xs:
            a = _writable(op_, t)
            ufunc(a, out=a)

    prim = _list_prim(op_, impl)

    def outofplace(self: list) -> list:
        self = _check_list(op, self)
        return [getattr(t, name)() for t in self]

    inplace.__name__, outofplace.__name__ = op_, op
    inplace.__doc__ = f"``t.{name}_()`` for every tensor of the list, in one op; returns the list."
    outofplace.__doc__ = f"``[t.{name}() for t in self]`` as one op."
    return inplace, outofplace


_foreach_sqrt_, _foreach_sqrt = _unary("sqrt", np.sqrt)
_foreach_neg_, _foreach_neg = _unary("neg", np.negative)
_foreach_abs_, _foreach_abs = _unary("abs", np.abs)


def _foreach_zero_(self: list) -> list:
    """Zero every tensor of the list in place, in one op; returns the list."""
    self = _check_list("_foreach_zero_", self)
    if _recording(self):
        for t in self:
            t.zero_()
        return self
    return _run(_ZERO, self)


def _zero_impl(*xs, n_written):
    for t in xs:
        t._data[...] = 0


_ZERO = _list_prim("_foreach_zero_", _zero_impl)


def _foreach_copy_(self: list, src: list, non_blocking: bool = False) -> list:
    """``self[i].copy_(src[i])`` for every i, in one op; returns ``self``."""
    self = _check_list("_foreach_copy_", self)
    src = _others("_foreach_copy_", len(self), src)
    if _recording(self, src) or any(s._device is not t._device for t, s in zip(self, src)):
        for t, s in zip(self, src):
            t.copy_(s)
        return self
    return _run(_COPY, self, src)


def _copy_impl(*xs, n_written):
    for t, s in zip(xs[:n_written], xs[n_written:]):
        t._data[...] = s._data


_COPY = _list_prim("_foreach_copy_", _copy_impl)


# --------------------------------------------------------------------------- ternary ops
def _addc(name: str, ufunc):
    op_ = f"_foreach_{name}_"
    op = f"_foreach_{name}"

    def inplace(self: list, tensor1: list, tensor2: list, value=1) -> list:
        self = _check_list(op_, self)
        t1s = _others(op_, len(self), tensor1)
        t2s = _others(op_, len(self), tensor2)
        values = _others(op_, len(self), value)
        if _per_tensor(self, t1s, t2s):
            for t, a, b, v in zip(self, t1s, t2s, values):
                getattr(t, name + "_")(a, b, value=v)
            return self
        return _run(prim, self, t1s, t2s, values=tuple(values))

    def impl(*xs, n_written, values):
        n = n_written
        for t, a, b, v in zip(xs[:n], xs[n : 2 * n], xs[2 * n :], values):
            d = _writable(op_, t)
            tmp = ufunc(_arr(a), _arr(b))
            if v != 1:
                tmp *= v
            np.add(d, tmp, out=d, casting="unsafe")

    prim = _list_prim(op_, impl)

    def outofplace(self: list, tensor1: list, tensor2: list, value=1) -> list:
        self = _check_list(op, self)
        t1s = _others(op, len(self), tensor1)
        t2s = _others(op, len(self), tensor2)
        values = _others(op, len(self), value)
        return [getattr(t, name)(a, b, value=v) for t, a, b, v in zip(self, t1s, t2s, values)]

    inplace.__name__, outofplace.__name__ = op_, op
    inplace.__doc__ = f"``self[i].{name}_(tensor1[i], tensor2[i], value=value[i])`` for every i, in one op."
    outofplace.__doc__ = f"``[self[i].{name}(tensor1[i], tensor2[i], value=value[i]) for i]`` as one op."
    return inplace, outofplace


_foreach_addcmul_, _foreach_addcmul = _addc("addcmul", np.multiply)
_foreach_addcdiv_, _foreach_addcdiv = _addc("addcdiv", np.true_divide)


def _lerp_array(d, end, w) -> None:
    """``d.lerp_(end, w)`` on arrays with PyTorch's two formulas (exact at w = 0 and w = 1)."""
    diff = end - d
    if w < 0.5:
        diff *= w
        d += diff
    else:
        diff *= 1.0 - w
        np.subtract(end, diff, out=d, casting="unsafe")


def _foreach_lerp_(self: list, tensors1: list, weight) -> list:
    """``self[i].lerp_(tensors1[i], weight[i])`` for every i, in one op; returns ``self``."""
    self = _check_list("_foreach_lerp_", self)
    ends = _others("_foreach_lerp_", len(self), tensors1)
    weights = _others("_foreach_lerp_", len(self), weight)
    if _per_tensor(self, ends, weights) or any(isinstance(w, Tensor) for w in weights):
        for t, e, w in zip(self, ends, weights):
            t.lerp_(e, w)
        return self
    return _run(_LERP, self, ends, weights=tuple(weights))


def _lerp_impl(*xs, n_written, weights):
    for t, e, w in zip(xs[:n_written], xs[n_written:], weights):
        _lerp_array(_writable("_foreach_lerp_", t), _arr(e), w)


_LERP = _list_prim("_foreach_lerp_", _lerp_impl)


def _foreach_lerp(self: list, tensors1: list, weight) -> list:
    """``[self[i].lerp(tensors1[i], weight[i]) for i]`` as one op."""
    self = _check_list("_foreach_lerp", self)
    out = [t.clone() for t in self]  # clone is an op (recorded when gradients flow)
    return _foreach_lerp_(out, tensors1, weight)
