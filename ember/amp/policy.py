"""The autocast policy: one table of op name -> what autocast does to its inputs, and
:func:`autocast_args`, the one call an op makes at its entry.

Policies (PyTorch's, from ``aten/src/ATen/autocast_mode.cpp``):

* ``"lower"``: floating-point inputs are cast to the autocast dtype (bfloat16 / float16): the
  matrix products and convolutions, where the low precision pays and float32 accumulation
  inside the op keeps the result accurate.
* ``"fp32"``: floating-point inputs are cast to float32: losses and ops that need range.
* ``"promote"``: inputs are cast to the widest floating dtype among them (``cat``, ``stack``).

Ops not in the table run in their inputs' dtypes. float64 inputs are never cast, and only
tensors on the autocast device type are. The CPU and CUDA lists differ as PyTorch's do: on CPU,
``softmax``, ``layer_norm`` and the plain reductions are not in any list (they follow their
input), while on CUDA they run in float32.
"""

from __future__ import annotations

from ember.amp.state import current, local, suspended

__all__ = ["POLICY", "autocast_args", "rnn_autocast"]

_LOWER = """matmul mm bmm addmm baddbmm addbmm linear conv1d conv2d conv3d conv_transpose1d
    conv_transpose2d conv_transpose3d einsum tensordot prelu scaled_dot_product_attention"""
# Recurrent layers. On CPU PyTorch lowers LSTM (its oneDNN layer) and the Elman RNN and RNNCell
# (built of linear ops); GRU, GRUCell and LSTMCell are in no list: they run in their inputs'
# dtypes, projections included. On CUDA the cuDNN layers and all cells run low.
_RNN_CPU = "lstm rnn rnn_cell"
_RNN_CUDA = "lstm gru rnn lstm_cell gru_cell rnn_cell"

_FP32_LOSSES = """cross_entropy nll_loss mse_loss l1_loss smooth_l1_loss huber_loss kl_div
    binary_cross_entropy binary_cross_entropy_with_logits soft_margin_loss margin_ranking_loss
    hinge_embedding_loss cosine_embedding_loss poisson_nll_loss gaussian_nll_loss
    multilabel_margin_loss multilabel_soft_margin_loss multi_margin_loss triplet_margin_loss ctc_loss"""

_PROMOTE = "cat stack index_copy"

POLICY: dict[str, dict[str, str]] = {
    "cpu": {
        **dict.fromkeys(_LOWER.split() + _RNN_CPU.split(), "lower"),
        **dict.fromkeys(_FP32_LOSSES.split(), "fp32"),
        **dict.fromkeys("prod trace cdist avg_pool3d".split(), "fp32"),
        **dict.fromkeys(_PROMOTE.split(), "promote"),
    },
    "cuda": {
        **dict.fromkeys((_LOWER.replace("einsum tensordot prelu", "")).split() + _RNN_CUDA.split(), "lower"),
        **dict.fromkeys(_FP32_LOSSES.split(), "fp32"),
        **dict.fromkeys(
            """softmax log_softmax layer_norm group_norm norm vector_norm sum prod cumsum cumprod
            exp log log10 log2 log1p expm1 pow acos asin cosh sinh tan erfinv reciprocal rsqrt
            logsumexp dist cdist renorm softplus""".split(),
            "fp32",
        ),
        **dict.fromkeys(_PROMOTE.split(), "promote"),
    },
}


def autocast_args(op: str, *args):
    """``args`` as the op ``op`` takes them under the current autocast (unchanged when it is off).

    Tensors, and tensors inside lists/tuples, are cast per ``POLICY``; other values pass through.
    Returns a tuple, so a call site reads ``x, w, b = autocast_args("linear", x, w, b)``.

    Example:
        >>> import ember
        >>> x, w = ember.ones(2, 3), ember.ones(4, 3)
        >>> with ember.autocast("cpu"):
        ...     autocast_args("linear", x, w)[0].dtype
        ember.bfloat16
    """
    if not local.active:
        return args
    dev = _device_type(args)
    if dev is None:
        return args
    enabled, dtype_name = current(dev)
    if not enabled:
        return args
    policy = POLICY.get(dev, {}).get(op)
    if policy is None:
        return args
    from ember import _dtype

    if policy == "lower":
        target = _dtype.to_dtype(dtype_name)
    elif policy == "fp32":
        target = _dtype.float32
    else:
        floats = [t.dtype for t in _tensors(args) if t.dtype.is_floating_point]
        if not floats:
            return args
        target = floats[0]
        for d in floats[1:]:
            target = _dtype.promote_types(target, d)
    return tuple(_cast(a, target, dev) for a in args)


def rnn_autocast(op: str, *args):
    """``(args, context)`` for a recurrent op (``"lstm"``, ``"gru"``, ``"rnn"``, ``"*_cell"``).

    Under autocast, an op in the lowered list gets its inputs and weights cast once; an op in
    no list keeps its inputs' dtypes. Either way its inside (the input projections are
    ``linear`` ops) runs in the returned context, with autocast suspended, so it is not cast again.

    Example:
        >>> import ember
        >>> with ember.autocast("cpu"):
        ...     (x,), ctx = rnn_autocast("lstm", ember.ones(2, 3))
        >>> x.dtype
        ember.bfloat16
    """
    import contextlib

    if not local.active:
        return args, contextlib.nullcontext()
    dev = _device_type(args)
    if dev is None or not current(dev)[0]:
        return args, contextlib.nullcontext()
    if POLICY.get(dev, {}).get(op) is not None:
        args = autocast_args(op, *args)
    return args, suspended()


def _tensors(args):
    from ember.tensor import Tensor

    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (x for x in a if isinstance(x, Tensor))


def _device_type(args):
    for t in _tensors(args):
        return _dev_type(t)
    return None


def _dev_type(t) -> str:
    """``t``'s device type; under ``ember.compile``'s capture a meta stand-in counts as the device
    it traces (an op's result inside the capture: CPU, where compiled code runs), so autocast
    inside a compiled function records its casts."""
    d = t._device.type
    if d == "meta":
        from ember._mode import mode

        if getattr(getattr(mode.handler, "__self__", None), "graph", None) is not None:  # a capture
            src = getattr(t, "_traced_from", None)
            return "cpu" if src is None else src.type
    return d


def _cast(a, target, dev):
    from ember.tensor import Tensor

    if isinstance(a, (list, tuple)):
        return type(a)(_cast(x, target, dev) for x in a)
    if not isinstance(a, Tensor):
        return a
    d = a.dtype
    if d is target or not d.is_floating_point or d.name == "float64" or _dev_type(a) != dev:
        return a
    # Leaves that require grad (parameters) are cast once per autocast region, as PyTorch's cache.
    if local.cache_enabled and a._requires_grad and a._node is None:
        hit = local.cache.get((id(a), target.name))
        if hit is not None and hit[0] is a:
            return hit[1]
        out = a.to(target)
        local.cache[(id(a), target.name)] = (a, out)
        return out
    return a.to(target)
