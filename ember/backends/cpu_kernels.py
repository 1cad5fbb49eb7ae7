"""The C kernels (``ember.backends.ckernels``) as the cpu implementations of primitives.

``nn.functional`` defines each fused primitive with a NumPy implementation that runs on every
device; this module registers, for device kind ``cpu``, a version that calls the C kernel and
falls back to the NumPy one when the kernel declines (no compiler, a dtype or layout it does not
handle). Imported once by ``ember/__init__.py``; nothing else calls the kernels' wrappers for
these ops.

Not yet moved here: conv2d's direct kernels (``nn/functional/conv.py`` chooses among three
algorithms by layout), the LSTM step kernels (``nn/functional/rnn.py``) and the attention row
softmax (``nn/functional/attention.py``), which still call the wrappers themselves.
"""

from __future__ import annotations

from ember.backends.ckernels import ops as ck
from ember.nn.functional import activation as _act
from ember.nn.functional import normalization as _norm
from ember.nn.functional import pooling as _pool

__all__ = ["register"]


def _softmax(x, dim):
    d = x._data
    if d.ndim and dim == d.ndim - 1:
        out = ck.softmax(d, log=False)
        if out is not None:
            return out
    return _act._softmax_array(d, dim)


def _log_softmax(x, dim):
    d = x._data
    if d.ndim and dim == d.ndim - 1:
        out = ck.softmax(d, log=True)
        if out is not None:
            return out
    return _act._log_softmax_array(d, dim)


def _softmax_backward(g, y, dim, log):
    yd = y._data
    if dim == yd.ndim - 1:
        gx = ck.softmax_backward(yd, g._data, log=log)
        if gx is not None:
            return gx
    return _act._softmax_backward_impl(g, y, dim, log)


def _gelu(x, approximate):
    out = ck.gelu(x._data, approximate)
    if out is None:
        return _act._gelu_impl(x, approximate)
    return out.astype(x._data.dtype, copy=False), {"saved": None}  # backward recomputes from x


def _gelu_backward(g, x, approximate, saved):
    if saved is None:
        gx = ck.gelu_backward(x._data, g._data, approximate)
        if gx is not None:
            return gx
    return _act._gelu_backward_impl(g, x, approximate, saved)


def _data(t):
    return None if t is None else t._data


def _layer_norm(input, weight, bias, axes, eps):
    res = ck.layer_norm(input._data, _data(weight), _data(bias), len(axes), eps)
    if res is None:
        return _norm._layer_norm_impl(input, weight, bias, axes, eps)
    out, xc, mean, rstd = res  # the node keeps the contiguous input, mean and 1/std
    return out, {"xhat": None, "xc": xc, "mean": mean, "rstd": rstd}


def _layer_norm_backward(g, x, w, node, need):
    if node.xhat is None:
        pshape = x._data.shape[x._data.ndim - len(node.axes) :]
        grads = ck.layer_norm_backward(node.xc, _data(w), g._data, node.mean, node.rstd, pshape, *need)
        if grads is not None:
            return grads
    return _norm._layer_norm_backward_impl(g, x, w, node, need)


def _batch_norm(input, weight, bias, axes, eps, bshape):
    fused = ck.batch_norm(input._data, _data(weight), _data(bias), eps)
    if fused is None:
        return _norm._batch_norm_impl(input, weight, bias, axes, eps, bshape)
    out, xc, mean, var, rstd = fused
    return (out, mean.reshape(-1), var.reshape(-1)), {"xhat": None, "xc": xc, "mean": mean, "rstd": rstd}


def _batch_norm_backward(g, x, w, node, need):
    if node.xhat is None:
        grads = ck.batch_norm_backward(node.xc, _data(w), g._data, node.mean, node.rstd, *need)
        if grads is not None:
            return grads
    return _norm._batch_norm_backward_impl(g, x, w, node, need)


def _max_pool(x, geo):
    xd = x._data
    fused = ck.max_pool2d(xd, geo.out_hw, geo.k, geo.s, geo.p, geo.d)  # None: ints, or no C kernels
    if fused is None:
        return _pool._max_pool_impl(x, geo)
    out, idx = fused
    return (out, idx), {"idx": idx, "in_shape": xd.shape}


def _max_pool_backward(g, idx, in_shape):
    out = ck.max_pool2d_backward(g._data, idx, in_shape)
    return out if out is not None else _pool._max_scatter_impl(g, idx, in_shape)


_KERNELS = [
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
]


def register() -> None:
    """Make the C-kernel versions the cpu implementations of their primitives."""
    for prim, fn in _KERNELS:
        prim.register("cpu", fn)


register()
