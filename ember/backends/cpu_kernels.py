"""The C kernels (``ember.backends.ckernels``) as the cpu implementations of primitives.

``nn.functional`` defines each fused primitive with a NumPy implementation that runs on every
device; this module registers, for device kind ``cpu``, a version that calls the C kernel and
falls back to the NumPy one when the kernel declines (no compiler, a dtype or layout it does not
handle). Imported once by ``ember/__init__.py``; nothing else calls the kernels' wrappers for
these ops. Every kernel call goes through ``call_f32``: the kernels take float32/float64 buffers,
so float16/bfloat16 arrays are widened and the results rounded back (saved statistics stay float32).

conv2d (three algorithms chosen by layout), the LSTM sequence and attention keep their array
code in ``nn/functional``; their cpu implementations here call it with the kernels' module
(``k=ck``), the other devices' with none.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ember._lowp import call_f32
from ember.backends.ckernels import ops as ck
from ember.backends.ckernels import optim as ck_optim
from ember.nn.functional import activation as _act
from ember.nn.functional import attention as _attn
from ember.nn.functional import conv as _conv
from ember.nn.functional import normalization as _norm
from ember.nn.functional import pooling as _pool
from ember.nn.functional import rnn as _rnn
from ember.nn.functional.linear import _LINEAR, _LINEAR_BACKWARD, _linear_backward_impl, _linear_impl
from ember.ops import fused as _fused
from ember.ops import inplace as _inplace

__all__ = ["register"]


def _softmax(x, dim):
    d = x._data
    if d.ndim and dim == d.ndim - 1:
        out = call_f32(ck.softmax, d, log=False)
        if out is not None:
            return out
    return _act._softmax_array(d, dim)


def _log_softmax(x, dim):
    d = x._data
    if d.ndim and dim == d.ndim - 1:
        out = call_f32(ck.softmax, d, log=True)
        if out is not None:
            return out
    return _act._log_softmax_array(d, dim)


def _softmax_backward(g, y, dim, log):
    yd = y._data
    if dim == yd.ndim - 1:
        gx = call_f32(ck.softmax_backward, yd, g._data, log=log)
        if gx is not None:
            return gx
    return _act._softmax_backward_impl(g, y, dim, log)


def _gelu(x, approximate):
    out = call_f32(ck.gelu, x._data, approximate)
    if out is None:
        return _act._gelu_impl(x, approximate)
    return out.astype(x._data.dtype, copy=False), {"saved": None}  # backward recomputes from x


def _gelu_backward(g, x, approximate, saved):
    if saved is None:
        gx = call_f32(ck.gelu_backward, x._data, g._data, approximate)
        if gx is not None:
            return gx
    return _act._gelu_backward_impl(g, x, approximate, saved)


def _data(t):
    return None if t is None else t._data


def _layer_norm(input, weight, bias, axes, eps):
    res = call_f32(ck.layer_norm, input._data, _data(weight), _data(bias), len(axes), eps, round_first=1)
    if res is None:
        return _norm._layer_norm_impl(input, weight, bias, axes, eps)
    out, xc, mean, rstd = res  # the node keeps the contiguous input, mean and 1/std
    return out, {"xhat": None, "xc": xc, "mean": mean, "rstd": rstd}


def _layer_norm_backward(g, x, w, node, need):
    if node.xhat is None:
        pshape = x._data.shape[x._data.ndim - len(node.axes) :]
        grads = call_f32(ck.layer_norm_backward, node.xc, _data(w), g._data, node.mean, node.rstd, pshape, *need)
        if grads is not None:
            return grads
    return _norm._layer_norm_backward_impl(g, x, w, node, need)


def _batch_norm(input, weight, bias, axes, eps, bshape):
    fused = call_f32(ck.batch_norm, input._data, _data(weight), _data(bias), eps, round_first=1)
    if fused is None:
        return _norm._batch_norm_impl(input, weight, bias, axes, eps, bshape)
    out, xc, mean, var, rstd = fused
    return (out, mean.reshape(-1), var.reshape(-1)), {"xhat": None, "xc": xc, "mean": mean, "rstd": rstd}


def _batch_norm_backward(g, x, w, node, need):
    if node.xhat is None:
        grads = call_f32(ck.batch_norm_backward, node.xc, _data(w), g._data, node.mean, node.rstd, *need)
        if grads is not None:
            return grads
    return _norm._batch_norm_backward_impl(g, x, w, node, need)


def _max_pool(x, geo):
    xd = x._data
    fused = call_f32(ck.max_pool2d, xd, geo.out_hw, geo.k, geo.s, geo.p, geo.d)  # None: ints, or no C kernels
    if fused is None:
        return _pool._max_pool_impl(x, geo)
    out, idx = fused
    return (out, idx), {"idx": idx, "in_shape": xd.shape}


def _max_pool_backward(g, idx, in_shape):
    out = call_f32(ck.max_pool2d_backward, g._data, idx, in_shape)
    return out if out is not None else _pool._max_scatter_impl(g, idx, in_shape)


def _linear(x, w, b):
    xd, wd = x._data, w._data
    out = ck.linear(xd.reshape(-1, xd.shape[-1]), wd, _data(b)) if wd.ndim == 2 and xd.ndim >= 1 else None
    return _linear_impl(x, w, b) if out is None else out.reshape(xd.shape[:-1] + (wd.shape[0],))


def _linear_backward(g, x, w, need):
    """The GEMMs of ``linear``'s gradient on the AVX-512 tiles where they run, else NumPy's."""
    xd, wd = x._data, w._data
    g2 = g._data.reshape(-1, wd.shape[0])
    gx = ck.matmul(g2, wd) if need[0] else None
    gw = ck.matmul(g2.T, xd.reshape(-1, wd.shape[1])) if need[1] else None
    if (need[0] and gx is None) or (need[1] and gw is None):
        return _linear_backward_impl(g, x, w, need)
    return (gx.reshape(xd.shape) if need[0] else None, gw, g2.sum(0) if need[2] else None)


def _addc(op: str, ufunc, divide: bool):
    """``addcmul_``/``addcdiv_`` in one pass over large same-shape float arrays (NumPy: three)."""
    numpy_impl = _inplace._addc_impl(ufunc, op)

    def impl(self, tensor1, tensor2, value):
        if (
            value.__class__ in (int, float)
            and tensor1.__class__ is self.__class__
            and tensor2.__class__ is self.__class__
            and ck_optim.addc_inplace(self._data, tensor1._data, tensor2._data, value, divide)
        ):
            return
        numpy_impl(self, tensor1, tensor2, value)

    return impl


def _lerp_(self, end, weight):
    """``lerp_`` with a number weight in one pass (NumPy: three), else the NumPy form."""
    if weight.__class__ in (int, float) and end.__class__ is self.__class__:
        if ck_optim.lerp_inplace(self._data, end._data, weight):
            return
    _inplace._lerp_inplace_impl(self, end, weight)


_KERNELS = [
    (_LINEAR, _linear),
    (_LINEAR_BACKWARD, _linear_backward),
    (_inplace.ADDC_PRIMS["addcmul_"], _addc("addcmul_", np.multiply, False)),
    (_inplace.ADDC_PRIMS["addcdiv_"], _addc("addcdiv_", np.true_divide, True)),
    (_inplace._LERP_, _lerp_),
    (_act._SOFTMAX, _softmax),
    (_act._LOG_SOFTMAX, _log_softmax),
    (_act._SOFTMAX_BACKWARD, _softmax_backward),
    (_act._GELU, _gelu),
    (_act._GELU_BACKWARD, _gelu_backward),
    (_norm._LAYER_NORM, _layer_norm),
    (_norm._LAYER_NORM_BACKWARD, _layer_norm_backward),
    (_norm._BATCH_NORM, _batch_norm),
    (_norm._BATCH_NORM_BACKWARD, _batch_norm_backward),
    (_pool._MAX_POOL, _max_pool),
    (_pool._MAX_SCATTER, _max_pool_backward),
    (_conv._CONV2D, lambda x, w, b, geom: _conv._conv_forward(x._data, w._data, _data(b), geom, ck)),
    (_conv._CONV2D_INPUT_GRAD, lambda g, w, geom, x_shape: _conv._input_grad(g._data, w._data, x_shape, geom, k=ck)),
    (_conv._CONV2D_WEIGHT_GRAD, lambda x, g, geom, w_shape: _conv._weight_grad(x._data, g._data, w_shape, geom, k=ck)),
    (_conv._CONV2D_BACKWARD, partial(_conv._conv2d_backward_impl, k=ck)),
    (_rnn._SEQUENCE, partial(_rnn._sequence_impl, k=ck)),
    (_rnn._SEQUENCE_BACKWARD, partial(_rnn._sequence_backward_impl, k=ck)),
    (_attn._SDPA, partial(_attn._sdpa_impl, kernels=ck)),
    (_fused._FUSED_ADAM, partial(_fused._adam_kernel(False), k=ck_optim)),
    (_fused._FUSED_ADAMW, partial(_fused._adam_kernel(True), k=ck_optim)),
    (_fused._FUSED_SGD, partial(_fused._sgd_impl, k=ck_optim)),
    (_fused._FUSED_ADAGRAD, partial(_fused._adagrad_impl, k=ck_optim)),
]


def register() -> None:
    """Make the C-kernel versions the cpu implementations of their primitives."""
    for prim, fn in _KERNELS:
        prim.register("cpu", fn)


register()
