"""Loss functions, with a fused ``cross_entropy`` / ``nll_loss`` primitive for class targets.

For class-index targets both losses are one node each. Writing the target distribution of sample
``i`` as ``q_i`` (``(1 - ls) * w[t_i]`` on the target class plus ``ls / C * w`` everywhere, zero
for ignored samples), the per-sample loss is ``-sum_c q_ic * logp_ic``, so the gradient with
respect to the logits is ``sum(q_i) * softmax_i - q_i`` (cross entropy) or ``-q_i`` (NLL on
log-probabilities), times the reduction's scale. Every reduction and option of PyTorch uses that
one formula; with ``reduction='mean'`` the divisor is ``sum_i w[t_i]`` over non-ignored samples.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember import backends
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.nn.functional.activation import _LOG_SOFTMAX, _logsigmoid, log_softmax, softmax
from ember.ops import elementwise as ew
from ember.ops._base import Tensor, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = [
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
]


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='...' instead.", stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        return "mean"
    return "sum" if reduce else "none"


def _check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# --------------------------------------------------------------------------- class-index targets
class _ClassTargets:
    """Class-index targets laid out against logits reshaped to (M, C), with their weights."""

    def __init__(self, input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, op: str):
        d = input._data
        if d.ndim == 0:
            raise ValueError(f"{op}: Expected input to have at least 1 dimension (got 0)")
        c = d.shape[0] if d.ndim == 1 else d.shape[1]
        t = target._device.backend.to_host(target._data)
        if d.ndim == 1:
            if t.ndim != 0:
                raise RuntimeError(f"{op}: 1D target tensor expected for 0D-batch input, got {list(target.shape)}")
            expect = ()
        else:
            expect = (d.shape[0],) + d.shape[2:]
            if t.shape[:1] != expect[:1]:
                raise ValueError(
                    f"Expected input batch_size ({d.shape[0]}) to match target batch_size ({t.shape[0] if t.ndim else 0})."
                )
            if t.shape != expect:
                raise RuntimeError(f"size mismatch (got input: {list(input.shape)} , target: {list(target.shape)})")
        if t.dtype.kind not in "iu":
            raise RuntimeError(f"expected scalar type Long but found {target.dtype.name.capitalize()}")
        if weight is not None and weight.shape != (c,):
            raise RuntimeError(
                f"weight tensor should be defined either for all {c} classes or no classes but got weight tensor of shape: {list(weight.shape)}"
            )
        self.c = c
        self.in_shape = d.shape
        self.out_shape = t.shape
        flat = t.reshape(-1).astype(np.int64)
        self.valid = flat != ignore_index
        bad = self.valid & ((flat < 0) | (flat >= c))
        if bad.any():
            raise IndexError(f"Target {int(flat[bad][0])} is out of bounds.")
        self.t = np.where(self.valid, flat, 0)
        self.w = None if weight is None else weight._device.backend.to_host(weight._data)
        wt = np.ones(flat.shape, dtype=d.dtype) if self.w is None else self.w[self.t].astype(d.dtype)
        self.wt = wt * self.valid  # w[t_i], zero for ignored samples
        self.rows = np.arange(flat.size)
        if not backends.on_host(d):
            # checked on the host; the arrays the loss reads go to the logits' device
            self.t, self.valid, self.wt, self.rows = (
                backends.like(d, a) for a in (self.t, self.valid, self.wt, self.rows)
            )
            self.w = None if self.w is None else backends.like(d, self.w)

    def to_2d(self, d):
        if d.ndim == 1:
            return d[None, :]
        if d.ndim == 2:
            return d
        return np.moveaxis(d, 1, -1).reshape(-1, self.c)

    def from_2d(self, a):
        if len(self.in_shape) == 1:
            return a[0]
        if len(self.in_shape) == 2:
            return a
        n = self.in_shape[0]
        return np.moveaxis(a.reshape((n,) + self.in_shape[2:] + (self.c,)), -1, 1)

    def per_sample(self, logp2, ls: float):
        """``-sum_c q_ic logp_ic`` for each sample (zero where ignored)."""
        picked = logp2[self.rows, self.t]
        loss = -(1.0 - ls) * self.wt * picked
        if ls:
            smooth = -(logp2 * self.w).sum(axis=1) if self.w is not None else -logp2.sum(axis=1)
            loss = loss + (ls / self.c) * smooth * self.valid
        return loss

    def q(self, ls: float, dtype):
        """The dense target distribution q (M, C)."""
        m = self.t.size
        q = np.zeros_like(self.wt, dtype=dtype, shape=(m, self.c))  # on the logits' device
        if ls:
            base = np.ones_like(q, shape=(self.c,)) if self.w is None else self.w.astype(dtype)
            q += (ls / self.c) * base[None, :] * self.valid[:, None]
        q[self.rows, self.t] += (1.0 - ls) * self.wt
        return q

    def denominator(self):
        return self.wt.sum()


class _ClassLoss(Node):
    """Shared backward of the fused class-target losses (``sm`` holds softmax for cross entropy)."""

    __slots__ = ("ct", "ls", "reduction", "denom", "logp", "softmax_mode", "ignore_index", "op")

    def _scale(self, g):
        """Upstream gradient as a per-sample column (M, 1) array or Tensor."""
        if self.reduction == "none":
            return g.reshape(-1, 1) if isinstance(g, Tensor) else g.reshape(-1, 1)
        s = g if self.reduction == "sum" else g / self.denom
        return s

    def backward(self, g):
        ct = self.ct
        x = self.inputs[0]
        if not grad_state.enabled:
            return (apply(_CLASS_LOSS_BACKWARD, g, x, node=self),)
        dtype = x._data.dtype
        q = ct.q(self.ls, dtype)
        qsum = q.sum(axis=1, keepdims=True)
        q_t = Tensor._from(q, g)
        if self.softmax_mode:
            p = softmax(x, 1 if x.ndim > 1 else 0)
            p2 = _to_2d_tensor(p, ct)
            grad2 = p2 * Tensor._from(qsum, g) - q_t
        else:
            grad2 = -q_t
        grad2 = grad2 * (g.reshape(-1, 1) if self.reduction == "none" else self._scale(g))
        return (_from_2d_tensor(grad2, ct),)


def _class_loss_backward_impl(g, x, node):
    """The gradient of a fused class loss on arrays (no ``create_graph``)."""
    ct = node.ct
    dtype = x._data.dtype
    q = ct.q(node.ls, dtype)
    if node.softmax_mode:
        grad2 = np.exp(node.logp)
        grad2 *= q.sum(axis=1, keepdims=True)
        grad2 -= q
    else:
        grad2 = -q
    grad2 *= node._scale(g._data)
    return ct.from_2d(grad2).astype(dtype, copy=False)


_CLASS_LOSS_BACKWARD = Primitive("class_loss_backward", None, cpu=_class_loss_backward_impl)
_CLASS_LOSS_BACKWARD.register("meta", lambda g, x, node: np.zeros_like(x._data))
_CLASS_LOSS_BACKWARD.register("cuda", _class_loss_backward_impl)


class CrossEntropy(_ClassLoss):
    __slots__ = ()


class NllLoss(_ClassLoss):
    __slots__ = ()


def _to_2d_tensor(t: Tensor, ct: _ClassTargets) -> Tensor:
    if t.ndim == 1:
        return t.reshape(1, -1)
    if t.ndim == 2:
        return t
    return t.movedim(1, -1).reshape(-1, ct.c)


def _from_2d_tensor(t: Tensor, ct: _ClassTargets) -> Tensor:
    if len(ct.in_shape) == 1:
        return t.reshape(-1)
    if len(ct.in_shape) == 2:
        return t
    n = ct.in_shape[0]
    return t.reshape((n,) + ct.in_shape[2:] + (ct.c,)).movedim(-1, 1)


def _class_loss(input, target, weight, ignore_index, reduction, ls, softmax_mode, op) -> Tensor:
    _check_reduction(reduction)
    return apply(
        _CROSS_ENTROPY if softmax_mode else _NLL_LOSS,
        input,
        target,
        weight,
        ignore_index=ignore_index,
        reduction=reduction,
        ls=ls,
        softmax_mode=softmax_mode,
        op=op,
    )


def _class_loss_impl(input, target, weight, ignore_index, reduction, ls, softmax_mode, op):
    """The loss on arrays; the node keeps the targets' layout and the log-probabilities."""
    ct = _ClassTargets(input, target, weight, ignore_index, op)
    x2 = ct.to_2d(input._data)
    # log_softmax by its primitive's implementation for this device (the C row kernel on cpu).
    logp = _LOG_SOFTMAX.impl_for(input._device)(Tensor._from(x2, input), 1) if softmax_mode else x2
    loss = ct.per_sample(logp, ls).astype(input._data.dtype, copy=False)
    denom = None
    if reduction == "none":
        out = loss.reshape(ct.out_shape)
    elif reduction == "sum":
        out = _zero_dim(loss.sum(), loss.dtype)
    else:
        denom = ct.denominator()
        with np.errstate(invalid="ignore", divide="ignore"):
            out = _zero_dim(loss.sum() / denom, loss.dtype)
    return out, {"ct": ct, "denom": denom, "logp": logp if softmax_mode else None}


def _zero_dim(value, dtype):
    """A reduction's result as a 0-d array: NumPy gives a scalar, CuPy already a 0-d device array."""
    return np.asarray(value, dtype=dtype) if isinstance(value, (np.generic, float)) else value.astype(dtype, copy=False)


def _class_loss_meta(input, target, weight, ignore_index, reduction, ls, softmax_mode, op):
    """Shapes only: the targets' values (bounds, ignored samples) are not known on meta."""
    d = input._data
    if reduction == "none":
        out = np.zeros_like(target._data, dtype=d.dtype)
    else:
        out = d.sum()
    return out, {"ct": None, "denom": None, "logp": None}


# The targets (and class weights) are inputs: the implementation reads them, the gradient
# goes to the logits only.
_CROSS_ENTROPY = Primitive("cross_entropy", CrossEntropy, cpu=_class_loss_impl, extras=True)
_NLL_LOSS = Primitive("nll_loss", NllLoss, cpu=_class_loss_impl, extras=True)
for _prim in (_CROSS_ENTROPY, _NLL_LOSS):
    _prim.register("meta", _class_loss_meta)
    _prim.register("cuda", _class_loss_impl)


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of class ``target`` under log-probabilities ``input`` (N, C, ...).

    Example:
        >>> import ember
        >>> logp = ember.tensor([[0.0, -1.0]])
        >>> ember.nn.functional.nll_loss(logp, ember.tensor([1]))
        tensor(1.)
    """
    input, target = autocast_args("nll_loss", input, target)
    check_tensor(input, "nll_loss")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return _class_loss(input, target, weight, ignore_index, reduction, 0.0, False, "nll_loss")


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross entropy between logits ``input`` (N, C, d1, ...) and class indices or class probabilities.

    Example:
        >>> import ember
        >>> logits = ember.tensor([[0.0, 0.0]])
        >>> ember.nn.functional.cross_entropy(logits, ember.tensor([0]))
        tensor(0.6931)
    """
    input, target = autocast_args("cross_entropy", input, target)
    check_tensor(input, "cross_entropy")
    check_tensor(target, "cross_entropy", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if target._data.dtype.kind in "fV":
        return _cross_entropy_probs(input, target, weight, reduction, label_smoothing)
    return _class_loss(input, target, weight, ignore_index, reduction, float(label_smoothing), True, "cross_entropy")


def _cross_entropy_probs(input, target, weight, reduction, ls) -> Tensor:
    _check_reduction(reduction)
    if target.shape != input.shape:
        raise RuntimeError(
            f"Expected floating point target to have the same shape as input ({list(input.shape)}), "
            f"got {list(target.shape)}"
        )
    cdim = 1 if input.ndim > 1 else 0
    c = input.shape[cdim]
    logp = log_softmax(input, cdim)
    if ls:
        target = target * (1 - ls) + ls / c
    prod = logp * target
    if weight is not None:
        prod = prod * weight.reshape((c,) + (1,) * (input.ndim - 1 - cdim))
    if reduction == "none":
        return -prod.sum(cdim)
    if reduction == "sum":
        return -prod.sum()
    return -prod.sum() / (input.numel() / c)


# --------------------------------------------------------------------------- regression
def _check_same_size(input: Tensor, target: Tensor, name: str) -> None:
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). "
            "This will likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
            stacklevel=3,
        )


def mse_loss(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean", weight=None
) -> Tensor:
    """Mean squared error ``(input - target) ** 2``, reduced.

    Example:
        >>> import ember
        >>> ember.nn.functional.mse_loss(ember.tensor([1.0, 3.0]), ember.tensor([0.0, 0.0]))
        tensor(5.)
    """
    input, target = autocast_args("mse_loss", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size(input, target, "mse_loss")
    diff = input - target
    loss = diff * diff
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def l1_loss(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean", weight=None
) -> Tensor:
    """Mean absolute error ``|input - target|``, reduced."""
    input, target = autocast_args("l1_loss", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size(input, target, "l1_loss")
    loss = ew.abs(input - target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def smooth_l1_loss(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0
) -> Tensor:
    """``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``."""
    input, target = autocast_args("smooth_l1_loss", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_size(input, target, "smooth_l1_loss")
    d = ew.abs(input - target)
    if beta == 0.0:
        return _reduce(d, reduction)
    return _reduce(ew.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta), reduction)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0, weight=None) -> Tensor:
    """``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``."""
    input, target = autocast_args("huber_loss", input, target)
    _check_same_size(input, target, "huber_loss")
    d = ew.abs(input - target)
    loss = ew.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def kl_div(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False
) -> Tensor:
    """KL divergence with ``input`` as log-probabilities; ``reduction='batchmean'`` divides by N."""
    input, target = autocast_args("kl_div", input, target)
    if reduction != "batchmean":
        reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = ew.exp(target) * (target - input)
    else:
        safe = ew.where(target > 0, target, 1.0)
        loss = ew.where(target > 0, target * (ew.log(safe) - input), 0.0 * input)
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------- binary
def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"
) -> Tensor:
    """``-(t log x + (1 - t) log(1 - x))`` on probabilities ``input``; each log is clamped at -100.

    Example:
        >>> import ember
        >>> ember.nn.functional.binary_cross_entropy(ember.tensor([0.5]), ember.tensor([1.0]))
        tensor(0.6931)
    """
    input, target = autocast_args("binary_cross_entropy", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if target.shape != input.shape:
        raise ValueError(
            f"Using a target size ({target.shape}) that is different to the input size ({input.shape}) is "
            "deprecated. Please ensure they have the same size."
        )
    d = input._data
    if d.size and (d.min() < 0 or d.max() > 1):
        raise RuntimeError("all elements of input should be between 0 and 1")
    log_x = ew.clamp_min(ew.log(input), -100.0)
    log_1mx = ew.clamp_min(ew.log(1.0 - input), -100.0)
    loss = -(target * log_x + (1.0 - target) * log_1mx)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid + binary cross entropy in the stable form ``(1 - t) x + lw * softplus(-x)``.

    ``lw = 1 + (pos_weight - 1) * t`` weighs positive examples.
    """
    input, target = autocast_args("binary_cross_entropy_with_logits", input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size ({input.shape})")
    # softplus(-x) = -logsigmoid(x), finite for any x and smooth at 0.
    sp = -_logsigmoid(input)
    if pos_weight is not None:
        lw = (pos_weight - 1.0) * target + 1.0
        loss = (1.0 - target) * input + lw * sp
    else:
        loss = (1.0 - target) * input + sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
