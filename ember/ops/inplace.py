"""In-place ops (``add_``, ``x[i] = v``, ``zero_``, ...): explicit ops in the graph.

An in-place op writes into the tensor's memory (so views see the change) and bumps the version
counter that saved-tensor checks read. When gradients flow, the op is recorded as its
out-of-place twin applied to a snapshot of the old value, and the tensor takes the new node as
its history. On a view, the base's history becomes ``CopySlices`` (the old base with the view's
region replaced), and the view is re-derived from the new base, as in PyTorch. Other live views
of the base that carry history are re-derived too (``refresh_views``), so a view read after the
write routes its gradient through it; nodes recorded before the write keep their old edges.

Each write also stamps the shared version counter with the graph clock (``Tensor._bump_version``):
backward then refuses nodes whose saved inputs were written after they were recorded.
"""

from __future__ import annotations

import numpy as np

from ember import _dtype
from ember._mutations import bump as _bump
from ember.autograd.function import FunctionCtx
from ember.autograd.grad_mode import no_grad
from ember.autograd.node import Node, tick
from ember.ops import elementwise as ew
from ember.ops._base import CPU, Tensor, grad_state
from ember.ops.dispatch import Primitive, apply, run
from ember.ops.movement import apply_view_chain, replay_view, view_chain

__all__ = [
    "add_",
    "addcdiv_",
    "addcmul_",
    "apply_inplace",
    "bernoulli_",
    "cauchy_",
    "copy_",
    "div_",
    "exponential_",
    "fill_",
    "geometric_",
    "index_add_",
    "lerp_",
    "log_normal_",
    "maximum_",
    "mul_",
    "normal_",
    "pow_",
    "random_",
    "refresh_views",
    "setitem_method",
    "sqrt_",
    "sub_",
    "uniform_",
    "zero_",
]


class CopySlices(Node):
    """Gradient of writing a new value into a view of ``base``."""

    # ``chain``: the view ops from base to the written view (kept instead of the view tensor
    # itself, which would make a base -> node -> view -> base reference cycle).
    __slots__ = ("chain",)
    saves_values = False

    def backward(self, g):
        base_old, src = self.inputs
        region_mask = apply(_COPY_SLICES_MASK, g, chain=self.chain)
        g_base = ew.where(region_mask, 0.0, g) if base_old._requires_grad else None
        g_src = apply_view_chain(self.chain, g) if src._requires_grad else None
        return g_base, g_src


def _copy_slices_mask_impl(g, chain):
    """True on the region of ``g``'s shape that the view ``chain`` selects, False elsewhere."""
    mask = g._device.backend.xp.zeros(g._data.shape, dtype=bool)
    region = Tensor._from(mask, g)
    with no_grad():  # the view ops run eagerly, inside this one op (not seen as ops of their own)
        for prim, params in chain:
            region = run(prim, (region,), params)
    region._data[...] = True
    return mask


_COPY_SLICES_MASK = Primitive("copy_slices_mask", None, _copy_slices_mask_impl)
_COPY_SLICES_MASK.register("meta", lambda g, chain: g._device.backend.xp.empty(g._data.shape, bool))


def _check_leaf(self: Tensor) -> None:
    if not grad_state.enabled:
        return
    if self._no_grad_view:
        raise RuntimeError(
            "A view was created in no_grad mode and is being modified inplace with grad mode enabled. "
            "Given that this use case is ambiguous and error-prone, it is forbidden. You can clarify your "
            "code by moving both the view and the inplace either both inside the no_grad block (if you "
            "don't want the inplace to be tracked) or both outside (if you want the inplace to be tracked)."
        )
    if self._node is None and self._requires_grad:
        if self._base is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    base = self._base
    if base is not None and base._node is None and base._requires_grad:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")


# PyTorch's scalar-type names, which its casting errors use.
_TORCH_NAMES = {
    "float32": "Float",
    "float64": "Double",
    "float16": "Half",
    "bfloat16": "BFloat16",
    "int64": "Long",
    "int32": "Int",
    "int16": "Short",
    "int8": "Char",
    "uint8": "Byte",
    "bool": "Bool",
}


def _check_cast(self: Tensor, result_dtype, op: str) -> None:
    mine = self._data.dtype
    if result_dtype == mine:
        return
    rd = _dtype.from_numpy_dtype(result_dtype)
    md = _dtype.from_numpy_dtype(mine)
    if rd.category > md.category:
        raise RuntimeError(
            f"{op}: result type {_TORCH_NAMES.get(rd.name, rd.name)} can't be cast to the desired output type "
            f"{_TORCH_NAMES.get(md.name, md.name)}"
        )


def _snapshot(self: Tensor) -> Tensor:
    """The current value and history of ``self`` as a separate tensor (old value for the graph).

    It shares ``self``'s memory at first; ``_keep_old_value`` copies it only when a recorded
    gradient rule will read it (``x.mul_(y)`` does, ``out.index_add_(0, i, y)`` does not).
    """
    snap = Tensor.__new__(Tensor)
    snap._data = self._data
    if self._device is not CPU:
        snap._device = self._device
    snap._node = self._node
    snap._requires_grad = self._requires_grad
    _take_fw(snap, self)
    return snap


def _take_fw(dst: Tensor, src: Tensor) -> None:
    """Forward AD: ``dst`` (the same value as ``src`` under new history) takes ``src``'s tangents."""
    fw = src.__dict__.get("_fw")
    if fw is not None:
        dst._fw = dict(fw)


def _node_reads(node: Node, i: int) -> bool:
    if isinstance(node, FunctionCtx):
        return True  # a custom Function may have saved it
    if not node.saves_values or node.reads_inputs is False:
        return False
    if node.reads_inputs == "others":
        return any(getattr(x, "_requires_grad", False) for j, x in enumerate(node.inputs) if j != i)
    return True


def _reads_old_value(res: Tensor, snap: Tensor, since: int) -> bool:
    """Whether a node recorded by the in-place op's computation reads ``snap``'s values."""
    stack = [res._node] if res._node is not None else []
    seen = set()
    while stack:
        node = stack.pop()
        if id(node) in seen or getattr(node, "seq", since + 1) <= since:
            continue  # recorded before the op: not part of its computation
        seen.add(id(node))
        for i, x in enumerate(node.inputs):
            if x is snap and _node_reads(node, i):
                return True
        stack.extend(e for e in node.edges if isinstance(e, Node))
    return False


def apply_inplace(self: Tensor, fn, args=(), raw=None, op: str = "inplace") -> Tensor:
    """Run ``fn(old) -> new`` as an in-place update of ``self``.

    ``raw``, when given, is ``(prim, inputs, params)``: an in-place primitive that writes into
    ``self`` directly, used when no gradient is recorded (the common case: optimizer updates
    under ``no_grad``). Otherwise the new value is computed out of place and written back by
    the ``write_`` primitive; either way the write is one op that ``apply`` sees.
    """
    _check_leaf(self)
    if self._device is CPU and not self._data.flags.writeable:
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor (shape "
            f"{list(self._data.shape)}, strides {list(self.stride())}) refers to a single memory location "
            "(or the memory is read-only). Please clone() the tensor before performing the operation."
        )
    recording = grad_state.enabled and (
        self._requires_grad or any(isinstance(a, Tensor) and a._requires_grad for a in args)
    )
    if recording and hasattr(self, "_value"):  # a vmap BatchedTensor with history (vmap(grad(f)))
        from ember.func._batched_grad import inplace

        return inplace(self, fn)
    if not recording:
        if raw is not None:
            prim, inputs, params = raw
            return apply(prim, self, *inputs, **params)
        return apply(_WRITE, self, fn(self), op=op)
    since = tick()
    snap = _snapshot(self)
    res = fn(snap)
    if _reads_old_value(res, snap, since):
        snap._data = snap._data.copy()
    apply(_WRITE, self, res, op=op)
    _bump()  # self (and its base, views) may get requires_grad: compiled steps' guards
    if self._base is None:
        self._node = res._node
        self._requires_grad = res._requires_grad
        if self._views is not None:
            refresh_views(self, None)
        return self
    base = self._base
    base_old = Tensor.__new__(Tensor)
    base_old._data = base._data
    base_old._node = base._node
    base_old._requires_grad = base._requires_grad
    _take_fw(base_old, base)
    chain = view_chain(self)
    new_base = apply(_COPY_SLICES, base_old, res, chain=chain)
    base._node = new_base._node
    base._requires_grad = True
    _take_fw(base, new_base)
    new_self = apply_view_chain(chain, base)
    self._node = new_self._node
    self._requires_grad = True
    _take_fw(self, new_self)
    if base._views is not None:
        refresh_views(base, self)
    return self


def refresh_views(base: Tensor, skip) -> None:
    """Give the live views of ``base`` (other than ``skip``) history from base's new node.

    A view read after its base was modified in place must route its gradient through the
    modification, as in PyTorch; nodes recorded earlier keep the old edges.
    """
    live = []
    for ref in list(base._views):  # replaying appends the replay's own temporaries: not ours
        v = ref()
        if v is not None:
            live.append(ref)
            if v is not skip:
                new = replay_view(v, base)
                v._node = new._node
                v._requires_grad = True
                _take_fw(v, new)
    base._views = live


def _write_impl(self: Tensor, res: Tensor, op: str) -> None:
    rd = res._data
    if rd.shape != self._data.shape:
        try:
            rd = np.broadcast_to(rd, self._data.shape)
        except ValueError:
            raise RuntimeError(
                f"{op}: output with shape {list(self._data.shape)} doesn't match the broadcast shape {list(rd.shape)}"
            ) from None
    _check_cast(self, rd.dtype, op)
    if rd is not self._data:
        self._data[...] = rd


# ``self[...] = res``: the write-back of an in-place op computed out of place.
_WRITE = Primitive("write_", None, _write_impl, inplace=True)
# The history of a base after a write into one of its views: its gradient rule splits the
# incoming gradient between the old base (outside the view) and the written value (inside).
# Its output is the base's (already written) array.
_COPY_SLICES = Primitive("copy_slices", CopySlices, lambda base_old, res, chain: base_old._data)


# --------------------------------------------------------------------------- arithmetic
def _other_array(self: Tensor, other, op: str):
    if isinstance(other, Tensor):
        od = other._data
        if od.shape != self._data.shape:
            try:
                shape = np.broadcast_shapes(od.shape, self._data.shape)
            except ValueError:
                raise ew._broadcast_error(op, self._data, od) from None
            if shape != self._data.shape:
                raise RuntimeError(
                    f"{op}: output with shape {list(self._data.shape)} doesn't match the broadcast shape {list(shape)}"
                )
        rt = _dtype.result_type(self, other).np
    else:
        od = other
        rt = _dtype.result_type(self, other).np
    return od, rt


def _ufunc_inplace_impl(ufunc, op: str, float_result: bool):
    def impl(self, other):
        od, rt = _other_array(self, other, op)
        if float_result and np.dtype(rt).kind not in "fV":
            rt = _dtype.defaults.float.np
        _check_cast(self, np.dtype(rt), op)
        arr = self._data
        ufunc(arr, od, out=arr, casting="unsafe")

    return impl


def _ufunc_inplace(ufunc, fn, op: str, float_result: bool = False):
    prim = Primitive(op, None, _ufunc_inplace_impl(ufunc, op, float_result), inplace=True)

    def method(self, other, *, alpha=1):
        if alpha != 1:
            other = other * alpha
        return apply_inplace(self, lambda x: fn(x, other), (other,), raw=(prim, (other,), {}), op=op)

    method.__name__ = op
    method.__doc__ = f"In-place ``{fn.__name__}``; returns self."
    return method


add_ = _ufunc_inplace(np.add, ew.add, "add_")
sub_ = _ufunc_inplace(np.subtract, ew.sub, "sub_")
mul_ = _ufunc_inplace(np.multiply, ew.mul, "mul_")
div_ = _ufunc_inplace(np.true_divide, ew.div, "div_", float_result=True)
pow_ = _ufunc_inplace(np.power, ew.pow, "pow_")


def _generic_inplace(fn, op: str):
    def method(self, *args, **kwargs):
        tensors = tuple(a for a in args if isinstance(a, Tensor))
        return apply_inplace(self, lambda x: fn(x, *args, **kwargs), tensors, op=op)

    method.__name__ = op
    method.__doc__ = f"In-place ``{getattr(fn, '__name__', op)}``; returns self."
    return method


def zero_(self: Tensor) -> Tensor:
    """Fill with zeros in place."""

    return apply_inplace(self, lambda x: x * 0, (), raw=(_FILL, (), {"value": 0}), op="zero_")


def _fill_impl(self, value):
    self._data[...] = value._data if isinstance(value, Tensor) else value


_FILL = Primitive("fill_", None, _fill_impl, inplace=True)


def fill_(self: Tensor, value) -> Tensor:
    """Fill with ``value`` (a number or 0-d tensor) in place."""
    if isinstance(value, Tensor) and value._data.ndim:
        raise RuntimeError(
            f"fill_ only supports 0-dimension value tensor but got tensor with {value._data.ndim} dimensions."
        )

    def fn(x):
        from ember.ops.creation import zeros_like

        return zeros_like(x) + value

    return apply_inplace(self, fn, (value,), raw=(_FILL, (), {"value": value}), op="fill_")


def copy_(self: Tensor, src, non_blocking: bool = False) -> Tensor:
    """Copy ``src`` (broadcast, cast to self's dtype) into self."""
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_(): argument 'src' must be Tensor, not {type(src).__name__}")
    try:
        np.broadcast_to(np.empty(src._data.shape, dtype=bool), self._data.shape)
    except ValueError:
        raise RuntimeError(
            f"copy_: the source shape {list(src.shape)} cannot be broadcast to the destination shape {list(self.shape)}"
        ) from None

    def fn(x):
        from ember.ops.movement import expand

        s = src.to(self.dtype) if src._data.dtype != self._data.dtype else src
        return expand(s, self._data.shape) + x * 0

    return apply_inplace(self, fn, (src,), raw=(_COPY, (src,), {}), op="copy_")


def _copy_impl(self, src):
    sd = src._data
    if src._device is not self._device:
        sd = self._device.backend.asarray(src._device.backend.to_host(sd))
    self._data[...] = sd


_COPY = Primitive("copy_", None, _copy_impl, inplace=True)


def setitem_method(self: Tensor, key, value) -> None:
    from ember.ops.index import setitem

    setitem(self, key, value)


# --------------------------------------------------------------------------- random fills (nn.init)
def _random_fill(name: str, sample):
    def impl(self, *args, generator=None, **kwargs):
        from ember.random import numpy_generator

        arr = self._data
        vals = sample(numpy_generator(generator), arr.shape, *args, **kwargs)
        arr[...] = self._device.backend.asarray(vals) if self._device is not CPU else vals

    prim = Primitive(name, None, impl, inplace=True)
    prim.register("meta", lambda self, *args, **kwargs: None)  # nothing to sample into

    def method(self, *args, generator=None, **kwargs):
        _check_leaf_for_init(self)
        return apply(prim, self, *args, generator=generator, **kwargs)

    method.__name__ = name
    method.__doc__ = f"Fill in place with samples (``{name}``); returns self."
    return method


def _check_leaf_for_init(self: Tensor) -> None:
    if grad_state.enabled and self._requires_grad:
        raise RuntimeError(
            "a leaf Variable that requires grad is being used in an in-place operation (wrap random "
            "initialization in ember.no_grad())."
        )


uniform_ = _random_fill("uniform_", lambda g, shape, a=0.0, b=1.0: g.uniform(a, b, shape))
normal_ = _random_fill("normal_", lambda g, shape, mean=0.0, std=1.0: g.normal(mean, std, shape))
bernoulli_ = _random_fill("bernoulli_", lambda g, shape, p=0.5: g.random(shape) < p)
exponential_ = _random_fill("exponential_", lambda g, shape, lambd=1.0: g.exponential(1.0 / lambd, shape))


def _random_ints(g, shape, low=0, high=None):
    if high is None:  # random_(to) samples [0, to)
        low, high = 0, (low if low else 2**24)
    return g.integers(low, high, shape)


random_ = _random_fill("random_", _random_ints)
geometric_ = _random_fill("geometric_", lambda g, shape, p: g.geometric(p, shape))
log_normal_ = _random_fill("log_normal_", lambda g, shape, mean=1.0, std=2.0: g.lognormal(mean, std, shape))
cauchy_ = _random_fill("cauchy_", lambda g, shape, median=0.0, sigma=1.0: median + sigma * g.standard_cauchy(shape))


def index_add_(self: Tensor, dim: int, index, source, *, alpha=1) -> Tensor:
    """In-place ``index_add``: without autograd, only the indexed slices are touched."""
    from ember.ops import index as ix

    raw = (_INDEX_ADD_, (index, source), {"dim": dim, "alpha": alpha})
    return apply_inplace(
        self, lambda x: ix.index_add(x, dim, index, source, alpha=alpha), (source,), raw=raw, op="index_add_"
    )


# --------------------------------------------------------------------------- optimizer update ops
# ``addcmul_``, ``addcdiv_``, ``lerp_``, ``maximum_`` and ``sqrt_`` are in-place primitives that
# write the array directly when no gradient is recorded (optimizer steps run them under no_grad on
# every parameter, and capture records them); with autograd they are recorded as their
# out-of-place twins, like every in-place op.
def _operand(self: Tensor, other, op: str):
    od, rt = _other_array(self, other, op)
    _check_cast(self, np.dtype(rt), op)
    return od


def _addc_impl(ufunc, op: str):
    def impl(self, tensor1, tensor2, value):
        arr = self._data
        a, b = _operand(self, tensor1, op), _operand(self, tensor2, op)
        if value != 1:  # (value * a) op b, as PyTorch's kernel rounds
            tmp = np.multiply(a, value)
            ufunc(tmp, b, out=tmp, casting="unsafe")
        else:
            tmp = ufunc(a, b)
        np.add(arr, tmp, out=arr, casting="unsafe")

    return impl


#: The primitives of addcmul_ and addcdiv_, by name (the C kernels register cpu implementations).
ADDC_PRIMS: dict = {}


def _addc_(ufunc, fn, op: str):
    prim = ADDC_PRIMS[op] = Primitive(op, None, _addc_impl(ufunc, op), inplace=True)

    def method(self, tensor1, tensor2, *, value=1):
        return apply_inplace(
            self,
            lambda x: fn(x, tensor1, tensor2, value=value),
            (tensor1, tensor2),
            raw=(prim, (tensor1, tensor2), {"value": value}),
            op=op,
        )

    method.__name__ = op
    method.__doc__ = f"In-place ``{op[:-1]}``: ``self += value * tensor1 {'*' if op == 'addcmul_' else '/'} tensor2``."
    return method


addcmul_ = _addc_(np.multiply, ew.addcmul, "addcmul_")
addcdiv_ = _addc_(np.true_divide, ew.addcdiv, "addcdiv_")


def _lerp_inplace_impl(self, end, weight):
    from ember.ops.foreach import _lerp_array

    arr = self._data
    e = _operand(self, end, "lerp_")
    if isinstance(weight, Tensor):
        w = _operand(self, weight, "lerp_")
        diff = e - arr
        arr[...] = np.where(np.abs(w) < 0.5, arr + w * diff, e - diff * (1 - w))
    else:
        _lerp_array(arr, e, weight)


_LERP_ = Primitive("lerp_", None, _lerp_inplace_impl, inplace=True)


def lerp_(self: Tensor, end, weight) -> Tensor:
    """In-place ``lerp``: ``self + weight * (end - self)``, with PyTorch's two formulas (exact at 0 and 1)."""
    return apply_inplace(
        self, lambda x: ew.lerp(x, end, weight), (end, weight), raw=(_LERP_, (end, weight), {}), op="lerp_"
    )


def _maximum_inplace_impl(self, other):
    arr = self._data
    np.maximum(arr, _operand(self, other, "maximum_"), out=arr, casting="unsafe")


_MAXIMUM_ = Primitive("maximum_", None, _maximum_inplace_impl, inplace=True)


def maximum_(self: Tensor, other) -> Tensor:
    """In-place ``maximum`` (NaN propagates); returns self."""
    return apply_inplace(self, lambda x: ew.maximum(x, other), (other,), raw=(_MAXIMUM_, (other,), {}), op="maximum_")


def _sqrt_inplace_impl(self):
    arr = self._data
    _check_cast(self, np.dtype(_dtype.defaults.float.np) if arr.dtype.kind in "biu" else arr.dtype, "sqrt_")
    np.sqrt(arr, out=arr)


_SQRT_ = Primitive("sqrt_", None, _sqrt_inplace_impl, inplace=True)


def sqrt_(self: Tensor) -> Tensor:
    """In-place ``sqrt``; returns self."""
    return apply_inplace(self, ew.sqrt, (), raw=(_SQRT_, (), {}), op="sqrt_")


def _index_add_inplace_impl(self, index, source, dim, alpha):
    from ember.ops import index as ix

    axis, idx, sd = ix.index_add_args(self, dim, index, source)
    if alpha != 1:
        sd = sd * alpha
    arr = self._data
    ix._index_add_into(arr, axis, idx, sd.astype(arr.dtype, copy=False), self._device)


_INDEX_ADD_ = Primitive("index_add_", None, _index_add_inplace_impl, inplace=True)
