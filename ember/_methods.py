"""Bind the functional ops onto :class:`ember.Tensor` as methods and operators.

``x.sum(1)`` is ``ember.sum(x, 1)``, ``x + y`` is ``ember.add(x, y)``, and each ``op_`` method is
the in-place form. Keeping the binding in one table means every op is written once, as a
function, and the method list reads like PyTorch's.
"""

from __future__ import annotations

import numpy as np

from ember.ops import convert, creation, index, inplace, linalg, movement, reduce
from ember.ops import elementwise as ew
from ember.tensor import Tensor

# Methods that are the function of the same name with the tensor as first argument.
_SAME_NAME = {
    ew: """add sub mul div true_divide pow neg negative exp log log1p expm1 sqrt rsqrt reciprocal sin cos
        tan tanh asin acos atan sinh cosh asinh acosh atanh arcsin arccos arctan erf relu sigmoid abs
        absolute sign sgn floor ceil trunc frac round square log2 log10 exp2 logical_not logical_and
        logical_or logical_xor bitwise_not bitwise_and bitwise_or bitwise_xor isnan isinf isfinite
        signbit nan_to_num clamp clip clamp_min clamp_max maximum minimum atan2 arctan2 remainder
        fmod floor_divide eq ne lt le gt ge greater greater_equal less less_equal not_equal equal
        allclose isclose lerp addcmul addcdiv where rsub""",
    reduce: """sum nansum mean nanmean var std prod amax amin argmax argmin max min aminmax logsumexp
        norm any all count_nonzero cumsum cumprod cummax""",
    movement: """reshape view view_as reshape_as flatten unflatten squeeze unsqueeze permute transpose
        swapaxes swapdims t adjoint movedim moveaxis expand expand_as broadcast_to repeat tile
        repeat_interleave contiguous clone narrow select split chunk tensor_split unbind flip fliplr
        flipud roll tril triu diagonal diag diag_embed trace""",
    index: """gather take_along_dim take scatter scatter_add scatter_reduce index_select index_add
        index_copy index_fill index_put masked_fill masked_select masked_scatter argsort sort msort
        topk kthvalue median nonzero argwhere unique bincount""",
    linalg: "matmul mm bmm mv dot vdot inner outer ger addmm baddbmm addmv",
    convert: "to cpu cuda type_as double half bfloat16 long short char byte",
}

for _mod, _names in _SAME_NAME.items():
    for _name in _names.split():
        setattr(Tensor, _name, getattr(_mod, _name))

Tensor.float = convert.float_
Tensor.int = convert.int_
Tensor.bool = convert.bool_
Tensor.where = lambda self, condition, other: ew.where(condition, self, other)
Tensor.bernoulli = creation.bernoulli


# ----- operators
def _rev(fn):
    return lambda self, other: fn(other, self)


Tensor.__add__ = ew.add
Tensor.__radd__ = _rev(ew.add)
Tensor.__sub__ = ew.sub
Tensor.__rsub__ = _rev(ew.sub)
Tensor.__mul__ = ew.mul
Tensor.__rmul__ = _rev(ew.mul)
Tensor.__truediv__ = ew.div
Tensor.__rtruediv__ = _rev(ew.div)
Tensor.__floordiv__ = ew.floor_divide
Tensor.__rfloordiv__ = _rev(ew.floor_divide)
Tensor.__mod__ = ew.remainder
Tensor.__rmod__ = _rev(ew.remainder)
Tensor.__pow__ = ew.pow
Tensor.__rpow__ = _rev(ew.pow)
Tensor.__matmul__ = linalg.matmul
Tensor.__rmatmul__ = _rev(linalg.matmul)
Tensor.__neg__ = ew.neg
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = ew.abs
Tensor.__eq__ = ew.eq
Tensor.__ne__ = ew.ne
Tensor.__lt__ = ew.lt
Tensor.__le__ = ew.le
Tensor.__gt__ = ew.gt
Tensor.__ge__ = ew.ge
Tensor.__and__ = ew.bitwise_and
Tensor.__rand__ = _rev(ew.bitwise_and)
Tensor.__or__ = ew.bitwise_or
Tensor.__ror__ = _rev(ew.bitwise_or)
Tensor.__xor__ = ew.bitwise_xor
Tensor.__rxor__ = _rev(ew.bitwise_xor)
Tensor.__invert__ = ew.bitwise_not
Tensor.__getitem__ = index.getitem
Tensor.__setitem__ = inplace.setitem_method


def _iter(self):
    if self._data.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return iter(movement.unbind(self, 0))


Tensor.__iter__ = _iter
Tensor.__contains__ = lambda self, item: bool((self._data == (item._data if isinstance(item, Tensor) else item)).any())

# ----- in-place
Tensor.add_ = inplace.add_
Tensor.sub_ = inplace.sub_
Tensor.mul_ = inplace.mul_
Tensor.div_ = inplace.div_
Tensor.pow_ = inplace.pow_
Tensor.__iadd__ = inplace.add_
Tensor.__isub__ = inplace.sub_
Tensor.__imul__ = inplace.mul_
Tensor.__itruediv__ = inplace.div_
Tensor.__ipow__ = inplace.pow_
Tensor.zero_ = inplace.zero_
Tensor.fill_ = inplace.fill_
Tensor.copy_ = inplace.copy_
for _name in ("uniform_ normal_ bernoulli_ exponential_ random_ geometric_ log_normal_ cauchy_").split():
    setattr(Tensor, _name, getattr(inplace, _name))

_GENERIC_INPLACE = {
    ew: """exp log log1p expm1 sqrt rsqrt reciprocal sin cos tan tanh sigmoid relu abs neg sign floor
        ceil trunc round clamp clamp_min clamp_max square lerp addcmul addcdiv remainder fmod
        floor_divide atan2 erf maximum minimum logical_not logical_and logical_or""",
    index: "masked_fill index_add index_copy index_fill index_put scatter scatter_add masked_scatter",
    movement: "tril triu",
}
for _mod, _names in _GENERIC_INPLACE.items():
    for _name in _names.split():
        setattr(Tensor, _name + "_", inplace._generic_inplace(getattr(_mod, _name), _name + "_"))
Tensor.clip_ = Tensor.clamp_
for _name in ("addcmul_", "addcdiv_", "lerp_", "maximum_", "sqrt_"):  # direct paths for optimizer updates
    setattr(Tensor, _name, getattr(inplace, _name))
Tensor.index_add_ = inplace.index_add_
Tensor.true_divide_ = inplace.div_
Tensor.resize_ = lambda self, *size: _set_data(self, creation.zeros(*size, dtype=self.dtype))


def _inplace_view(fn):
    """``t_``, ``squeeze_``, ``unsqueeze_``: self becomes ``fn(self)``, history included."""

    def method(self, *args):
        from ember.autograd.grad_mode import state

        if self._requires_grad and state.enabled:
            if self._node is None:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
            # The op's node must see self as it was: record it on a stand-in with the old
            # array and history, then take over the result's array and node.
            old = Tensor.__new__(Tensor)
            old.__dict__.update(self.__dict__)
            res = fn(old, *args)
            self._node = res._node
            if self._base is not None:
                self._view_of = res._view_of
        else:
            res = fn(self, *args)
        self._data = res._data
        return self

    method.__name__ = fn.__name__ + "_"
    method.__doc__ = f"In-place ``{fn.__name__}``: changes this tensor's shape; returns self."
    return method


Tensor.t_ = _inplace_view(movement.t)
Tensor.squeeze_ = _inplace_view(movement.squeeze)
Tensor.unsqueeze_ = _inplace_view(movement.unsqueeze)
Tensor.transpose_ = _inplace_view(movement.transpose)


def _set_data(self, res):
    self._data = res._data
    return self


# ----- properties and constructors of new tensors
Tensor.T = property(lambda self: movement.permute(self, tuple(reversed(range(self._data.ndim)))))
Tensor.mT = property(lambda self: movement.transpose(self, -2, -1))
Tensor.H = property(lambda self: movement.t(self))
Tensor.mH = Tensor.mT
Tensor.real = property(lambda self: self)


def _new(factory):
    def method(self, *size, dtype=None, device=None, requires_grad=False):
        return factory(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    return method


Tensor.new_zeros = _new(creation.zeros)
Tensor.new_ones = _new(creation.ones)
Tensor.new_empty = _new(creation.empty)
Tensor.new_full = lambda self, size, fill_value, *, dtype=None, device=None, requires_grad=False: creation.full(
    size, fill_value, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
)
Tensor.new_tensor = lambda self, data, *, dtype=None, device=None, requires_grad=False: creation.tensor(
    data, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
)
Tensor._from = staticmethod(lambda data, like: _wrap_like(data, like))


def _wrap_like(data, like):
    from ember.tensor import _wrap

    if not hasattr(data, "shape"):
        data = np.asarray(data)
    return _wrap(data, like._device)


def _apply_(self, fn):
    flat = self._data.reshape(-1)
    for i in range(flat.size):
        flat[i] = fn(flat[i].item())
    return self


Tensor.apply_ = _apply_
Tensor.map_ = lambda self, other, fn: _set_data(
    self, creation.tensor([fn(a, b) for a, b in zip(self.tolist(), other.tolist())], dtype=self.dtype)
)
