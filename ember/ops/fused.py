"""Fused optimizer ops: one native update over every parameter, as ``torch._fused_adam_`` and co.

Each op updates lists of tensors in place (parameters and optimizer state) with one call into
the C kernels (``ember/backends/ckernels/optim.c``) per dtype; tensors the kernel does not take
(non-contiguous state, other devices) and every tensor when no C compiler is available
(``EMBER_CKERNELS=0``) take the NumPy path below, which computes the same update. They are ops:
a captured training step records one op for the whole update. Step counts are read from the
``state_steps`` tensors, which the caller has already incremented (as in PyTorch).

Each op is one in-place primitive applied through ``ember.ops.dispatch.apply`` to its flattened
tensor lists, the written ones first (``layout``: each list's length, None for an unused list),
so the profiler and capture see it; on the meta device it writes nothing. The implementations
here are the NumPy path; ``ember/backends/cpu_kernels.py`` registers them on cpu with the
kernels' module (``k=``).

Example:
    >>> import ember
    >>> p, g, buf = ember.ones(3), ember.ones(3), ember.zeros(3)
    >>> _ = ember._fused_sgd_([p], [g], [buf], weight_decay=0.0, momentum=0.9, lr=0.5, dampening=0.0,
    ...                       nesterov=False, maximize=False, is_first_step=True)
    >>> p
    tensor([0.5000, 0.5000, 0.5000])
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from ember.ops._base import CPU, Tensor, grad_state
from ember.ops.dispatch import Primitive, apply
from ember.ops.foreach import _done, _lerp_array

__all__ = ["_fused_adagrad_", "_fused_adam_", "_fused_adamw_", "_fused_sgd_"]

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check(op: str, params: list, *lists) -> None:
    if grad_state.enabled and any(t._requires_grad for t in params):
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an in-place operation.")
    for lst in lists:
        if lst is not None and len(lst) != len(params):
            raise RuntimeError(
                f"{op}: Tensor lists must have the same number of tensors, got {len(params)} and {len(lst)}"
            )
    for p in params:
        if not isinstance(p, Tensor) or p._data.dtype.kind not in "fV":
            raise RuntimeError(f"{op}: expected floating-point parameters, got {getattr(p, 'dtype', type(p))}")


class _Group:
    """The parameters of one dtype that the kernel takes: their indices and arrays."""

    __slots__ = ("idx", "params", "grads", "states")

    def __init__(self, n_states: int):
        self.idx, self.params, self.grads = [], [], []
        self.states = [[] for _ in range(n_states)]


#: The last partition made for each fused op: weak references to the parameter, gradient and
#: state arrays it was made from, and each kernel group's indices. An optimizer passes
#: the same arrays every step; then only their identity is compared (an array keeps its dtype,
#: shape and buffer; ``.data`` replacement, new parameters or loaded state give new arrays).
_PLANS: dict = {}


def _same(refs: list, arrays: list) -> bool:
    if len(refs) != len(arrays):
        return False
    for r, a in zip(refs, arrays):
        if r() is not a:
            return False
    return True


def _partition(op: str, params: list, grads: list, states: list) -> tuple[list, list]:
    """Split the parameters into kernel groups by dtype and the rest (NumPy path); cached per ``op``.

    The kernel takes a float32/float64 CPU parameter whose gradient and state buffers have its
    dtype and shape, with parameter and state C-contiguous and writable; a non-contiguous
    gradient is copied (it is only read). ``states`` lists the written state lists (None: unused).
    """
    states = [lst for lst in states if lst is not None]
    pa = [t._data for t in params]
    ga = [t._data for t in grads]
    sa = [[t._data for t in lst] for lst in states]
    flat = pa + ga
    for lst in sa:
        flat += lst
    plan = _PLANS.get(op)
    if plan is not None and _same(plan[0], flat) and all(p._device is CPU for p in params):
        groups = []
        for idx in plan[1]:
            g = _Group(0)
            g.idx = idx
            if len(idx) == len(pa):  # one group, in order
                g.params, g.grads, g.states = pa, ga, sa
            else:
                g.params = [pa[i] for i in idx]
                g.grads = [ga[i] for i in idx]
                g.states = [[lst[i] for i in idx] for lst in sa]
            groups.append(g)
        return groups, []
    groups, rest, copied = _split(params, pa, ga, sa)
    if not rest and not copied:
        _PLANS[op] = ([weakref.ref(a) for a in flat], [tuple(g.idx) for g in groups.values()])
    else:
        _PLANS.pop(op, None)
    return list(groups.values()), rest


def _split(params: list, pa: list, ga: list, sa: list) -> tuple[dict, list, bool]:
    """The uncached partition: ``{dtype: _Group}``, the indices for NumPy, whether a gradient was copied."""
    groups: dict = {}
    rest = []
    copied = False
    for i, p in enumerate(params):
        pd = pa[i]
        dt = pd.dtype
        ok = p._device is CPU and type(pd) is np.ndarray and dt in _KERNEL_DTYPES and _writable_contig(pd)
        gd = ga[i]
        ok = ok and type(gd) is np.ndarray and gd.dtype == dt and gd.shape == pd.shape
        if ok:
            arrays = [lst[i] for lst in sa]
            for a in arrays:
                if type(a) is not np.ndarray or a.dtype != dt or a.shape != pd.shape or not _writable_contig(a):
                    ok = False
                    break
        if not ok:
            rest.append(i)
            continue
        g = groups.get(dt)
        if g is None:
            g = groups[dt] = _Group(len(sa))
        g.idx.append(i)
        g.params.append(pd)
        if not gd.flags.c_contiguous:
            gd = np.ascontiguousarray(gd)
            copied = True
        g.grads.append(gd)
        for lst, a in zip(g.states, arrays):
            lst.append(a)
    return groups, rest, copied


def _writable_contig(a: np.ndarray) -> bool:
    flags = a.flags
    return flags.c_contiguous and flags.writeable


def _step_values(state_steps: list) -> list[float]:
    # The arrays' own item() (a step count is one element; the Tensor method adds checks and
    # hooks for tracing, which a running kernel does not need).
    out = []
    for s in state_steps:
        a = s._data
        out.append(float(a.item() if type(a) is np.ndarray and a.size == 1 else s.item()))
    return out


def _apply_lists(prim: Primitive, written: list, read: list, **params) -> None:
    """Apply ``prim`` to the tensors of the ``written`` lists, then the ``read`` ones (lists may be None).

    The implementation gets the lists back in this order (``_lists``); ``apply`` bumps the first
    written tensor's version, the others are bumped here.
    """
    lists = written + read
    layout = tuple(None if lst is None else len(lst) for lst in lists)
    flat = [t for lst in lists if lst is not None for t in lst]
    n_written = sum(len(lst) for lst in written if lst is not None)
    if not n_written:
        return
    apply(prim, *flat, layout=layout, n_written=n_written, **params)
    _done(flat[:n_written])


def _lists(xs: tuple, layout: tuple) -> list:
    """The flat inputs of a fused primitive cut back into its lists (None where unused)."""
    out, i = [], 0
    for n in layout:
        if n is None:
            out.append(None)
        else:
            out.append(list(xs[i : i + n]))
            i += n
    return out


def _fused_prim(name: str, impl) -> Primitive:
    prim = Primitive(name, None, impl, inplace=True)
    prim.register("meta", lambda *xs, **params: None)  # shapes and dtypes do not change
    return prim


# --------------------------------------------------------------------------- Adam / AdamW
def _adam_numpy(p, g, m, v, vmax, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled):
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    _lerp_array(m, g, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * g * g
    if amsgrad:
        np.maximum(vmax, v, out=vmax)
        v = vmax
    denom = np.sqrt(v)
    denom /= math.sqrt(1 - beta2**step)
    denom += eps
    upd = m / denom
    upd *= lr / (1 - beta1**step)
    np.subtract(p, upd, out=p, casting="unsafe")


def _fused_adam_impl(op, decoupled, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, **hp):
    maxs = max_exp_avg_sqs if hp["amsgrad"] else None
    _check(op, params, grads, exp_avgs, exp_avg_sqs, state_steps, maxs)
    prim = _FUSED_ADAMW if decoupled else _FUSED_ADAM
    _apply_lists(prim, [params, exp_avgs, exp_avg_sqs, maxs], [grads, state_steps], **hp)


def _adam_kernel(decoupled: bool):
    def impl(*xs, layout, n_written, k=None, **hp):
        params, exp_avgs, exp_avg_sqs, maxs, grads, state_steps = _lists(xs, layout)
        _adam_arrays(decoupled, params, grads, exp_avgs, exp_avg_sqs, maxs, state_steps, k, **hp)

    return impl


def _kernel_groups(k, op: str, params, grads, states) -> tuple[list, list]:
    """With the kernels' module ``k`` (the cpu implementation), the groups it takes and the rest;
    without (other devices), every parameter takes the NumPy path."""
    if k is None:
        return [], list(range(len(params)))
    return _partition(op, params, grads, states)


def _adam_arrays(decoupled, params, grads, exp_avgs, exp_avg_sqs, maxs, state_steps, k, **hp):
    amsgrad = hp["amsgrad"]
    steps = _step_values(state_steps)
    groups, rest = _kernel_groups(k, "adamw" if decoupled else "adam", params, grads, [exp_avgs, exp_avg_sqs, maxs])
    kw = dict(lr=hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    for g in groups:
        done = k.fused_adam(
            g.params, g.grads, g.states[0], g.states[1], g.states[2] if amsgrad else None, [steps[i] for i in g.idx],
            amsgrad=amsgrad, maximize=hp["maximize"], decoupled=decoupled, **kw,
        )  # fmt: skip
        if not done:
            rest.extend(g.idx)
    for i in rest:
        _adam_numpy(
            params[i]._data, grads[i]._data, exp_avgs[i]._data, exp_avg_sqs[i]._data,
            maxs[i]._data if amsgrad else None, steps[i], amsgrad=amsgrad, maximize=hp["maximize"],
            decoupled=decoupled, **kw,
        )  # fmt: skip


_FUSED_ADAM = _fused_prim("_fused_adam_", _adam_kernel(False))
_FUSED_ADAMW = _fused_prim("_fused_adamw_", _adam_kernel(True))


def _fused_adam_(
    params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, max_exp_avg_sqs: list, state_steps: list, *,
    lr: float, beta1: float, beta2: float, weight_decay: float, eps: float, amsgrad: bool, maximize: bool,
    grad_scale=None, found_inf=None,
) -> None:  # fmt: skip
    """One Adam step (L2 weight decay) over every parameter, in place, as ``torch._fused_adam_``."""
    _no_scaler("_fused_adam_", grad_scale, found_inf)
    _fused_adam_impl(
        "_fused_adam_", False, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
        beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize,
    )  # fmt: skip


def _fused_adamw_(
    params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, max_exp_avg_sqs: list, state_steps: list, *,
    lr: float, beta1: float, beta2: float, weight_decay: float, eps: float, amsgrad: bool, maximize: bool,
    grad_scale=None, found_inf=None,
) -> None:  # fmt: skip
    """One AdamW step (decoupled weight decay) over every parameter, as ``torch._fused_adamw_``."""
    _no_scaler("_fused_adamw_", grad_scale, found_inf)
    _fused_adam_impl(
        "_fused_adamw_", True, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
        beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize,
    )  # fmt: skip


def _no_scaler(op: str, grad_scale, found_inf) -> None:
    if grad_scale is not None or found_inf is not None:
        raise NotImplementedError(f"{op}: grad_scale and found_inf are not supported by ember (no GradScaler)")


# --------------------------------------------------------------------------- SGD
def _sgd_numpy(p, g, buf, first, lr, momentum, dampening, weight_decay, nesterov, maximize):
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        if first:
            buf[...] = g
        else:
            buf *= momentum
            buf += (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    np.subtract(p, lr * g, out=p, casting="unsafe")


def _fused_sgd_(
    params: list, grads: list, momentum_buffer_list: list, *, weight_decay: float, momentum: float, lr: float,
    dampening: float, nesterov: bool, maximize: bool, is_first_step, grad_scale=None, found_inf=None,
) -> None:  # fmt: skip
    """One SGD step over every parameter, in place, as ``torch._fused_sgd_``.

    ``is_first_step`` is a bool for all parameters (PyTorch's form) or one bool per parameter:
    on a first step the momentum buffer is set to the gradient.
    """
    _no_scaler("_fused_sgd_", grad_scale, found_inf)
    bufs = momentum_buffer_list if momentum != 0 else None
    _check("_fused_sgd_", params, grads, bufs)
    first = list(is_first_step) if isinstance(is_first_step, (list, tuple)) else [bool(is_first_step)] * len(params)
    _apply_lists(
        _FUSED_SGD, [params, bufs], [grads], first=tuple(first), lr=lr, momentum=momentum, dampening=dampening,
        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
    )  # fmt: skip


def _sgd_impl(*xs, layout, n_written, first, nesterov, maximize, k=None, **kw):
    params, bufs, grads = _lists(xs, layout)
    groups, rest = _kernel_groups(k, "sgd", params, grads, [bufs])
    for g in groups:
        done = k.fused_sgd(
            g.params, g.grads, g.states[0] if bufs is not None else None, [first[i] for i in g.idx],
            nesterov=nesterov, maximize=maximize, **kw,
        )  # fmt: skip
        if not done:
            rest.extend(g.idx)
    for i in rest:
        buf = bufs[i]._data if bufs is not None else None
        _sgd_numpy(params[i]._data, grads[i]._data, buf, first[i], nesterov=nesterov, maximize=maximize, **kw)


_FUSED_SGD = _fused_prim("_fused_sgd_", _sgd_impl)


# --------------------------------------------------------------------------- Adagrad
def _adagrad_numpy(p, g, s, step, lr, lr_decay, weight_decay, eps, maximize):
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    s += g * g
    std = np.sqrt(s)
    std += eps
    upd = g / std
    upd *= clr
    np.subtract(p, upd, out=p, casting="unsafe")


def _fused_adagrad_(
    params: list, grads: list, state_sums: list, state_steps: list, *, lr: float, lr_decay: float,
    weight_decay: float, eps: float, maximize: bool, grad_scale=None, found_inf=None,
) -> None:  # fmt: skip
    """One Adagrad step over every parameter, in place, as ``torch._fused_adagrad_``."""
    _no_scaler("_fused_adagrad_", grad_scale, found_inf)
    _check("_fused_adagrad_", params, grads, state_sums, state_steps)
    _apply_lists(
        _FUSED_ADAGRAD, [params, state_sums], [grads, state_steps], lr=lr, lr_decay=lr_decay,
        weight_decay=weight_decay, eps=eps, maximize=maximize,
    )  # fmt: skip


def _adagrad_impl(*xs, layout, n_written, k=None, **kw):
    params, state_sums, grads, state_steps = _lists(xs, layout)
    steps = _step_values(state_steps)
    groups, rest = _kernel_groups(k, "adagrad", params, grads, [state_sums])
    for g in groups:
        if not k.fused_adagrad(g.params, g.grads, g.states[0], [steps[i] for i in g.idx], **kw):
            rest.extend(g.idx)
    for i in rest:
        _adagrad_numpy(params[i]._data, grads[i]._data, state_sums[i]._data, steps[i], **kw)


_FUSED_ADAGRAD = _fused_prim("_fused_adagrad_", _adagrad_impl)
