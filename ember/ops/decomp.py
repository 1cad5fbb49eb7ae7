"""Cholesky factorization and triangular solves, with gradients: what the multivariate normal needs.

``cholesky(A)`` gives the lower factor ``L`` with ``A = L L^T``; ``solve_triangular(A, B)``
solves ``A X = B`` for a triangular ``A``. Both are batched over leading dims. The gradient rules
are written with these same ops (and matmul, tril), so they can be differentiated again.

Example:
    >>> import ember
    >>> A = ember.tensor([[4.0, 2.0], [2.0, 3.0]])
    >>> L = ember.linalg.cholesky(A)
    >>> L.tolist()
    [[2.0, 0.0], [1.0, 1.4142135381698608]]
    >>> ember.linalg.solve_triangular(L, ember.tensor([[2.0], [2.0]]), upper=False).tolist()
    [[1.0], [0.7071067690849304]]
"""

from __future__ import annotations

import numpy as np

from ember.autograd.node import Node
from ember.ops._base import Tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = ["cholesky", "solve_triangular"]


def _output(node: Node) -> Tensor:
    """The node's output as a tensor; under create_graph its history is the node itself."""
    t = Tensor.__new__(Tensor)
    t._data = node.out
    if node.inputs[0]._device is not t._device:
        t._device = node.inputs[0]._device
    if grad_state.enabled:
        t._node = node
        t._requires_grad = True
        _fw_attach(node, t)
    return t


def _check_square(A: Tensor, op: str) -> None:
    if A.dim() < 2:
        raise RuntimeError(f"linalg.{op}: The input tensor A must have at least 2 dimensions.")
    if A.shape[-1] != A.shape[-2]:
        raise RuntimeError(
            f"linalg.{op}: A must be batches of square matrices, but they are {A.shape[-2]} by {A.shape[-1]} matrices"
        )
    if not A.is_floating_point():
        raise RuntimeError(f"linalg.{op}: Expected a floating point tensor as input. Got {A.dtype}")


class Cholesky(Node):
    __slots__ = ("out",)

    def backward(self, gL):
        # A = L L^T.  With P = Phi(L^T gL) (lower triangle, diagonal halved),
        # gA = sym(L^-T P L^-1), symmetrized as PyTorch does.
        L = _output(self)
        P = (L.mT @ gL).tril()
        P = P - 0.5 * P.diagonal(0, -2, -1).diag_embed()
        S = solve_triangular(L.mT, solve_triangular(L.mT, P.mT, upper=True).mT, upper=True)
        return (0.5 * (S + S.mT),)


def cholesky(A: Tensor, *, upper: bool = False) -> Tensor:
    """The Cholesky factor of symmetric positive-definite ``A`` (lower, or upper with ``upper=True``)."""
    _check_square(A, "cholesky")
    out = apply(_CHOLESKY, A)
    return out.mT if upper else out


def _cholesky_impl(A):
    try:
        L = np.linalg.cholesky(A._data)
    except np.linalg.LinAlgError:
        raise RuntimeError(
            "linalg.cholesky: The factorization could not be completed because the input is not positive-definite."
        ) from None
    return L, {"out": L}  # the node keeps the factor: its gradient rule reads it


def _empty(shape, dtype, like):
    return like._device.backend.xp.empty(shape, dtype)


_CHOLESKY = Primitive("cholesky", Cholesky, _cholesky_impl, extras=True)
_CHOLESKY.register("meta", lambda A: (_empty(A._data.shape, A._data.dtype, A), {"out": None}))


class SolveTriangular(Node):
    __slots__ = ("upper", "out")

    def backward(self, gX):
        A, B = self.inputs
        gB = solve_triangular(A.mT, gX, upper=not self.upper)
        gA = -(gB @ _output(self).mT)
        gA = gA.triu() if self.upper else gA.tril()
        return _unbroadcast(gA, A.shape), _unbroadcast(gB, B.shape)


def _unbroadcast(g: Tensor, shape) -> Tensor:
    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape[:-2]) if s == 1 and g.shape[i + lead] != 1)
    return g.sum(dims, keepdim=True).reshape(shape) if dims else g


def solve_triangular(A: Tensor, B: Tensor, *, upper: bool, left: bool = True, unitriangular: bool = False) -> Tensor:
    """``X`` with ``A X = B`` (``X A = B`` when ``left=False``) for triangular ``A``, batched."""
    _check_square(A, "solve_triangular")
    if not left:
        return solve_triangular(A.mT, B.mT, upper=not upper, unitriangular=unitriangular).mT
    if unitriangular:
        eye = np.eye(A.shape[-1], dtype=A._data.dtype)
        A = A * Tensor._from(1 - eye, A) + Tensor._from(eye, A)
    if B.dim() < 2 or B.shape[-2] != A.shape[-1]:
        raise RuntimeError(
            f"linalg.solve_triangular: Incompatible shapes of A and B for the equation AX = B "
            f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2] if B.dim() > 1 else '?'}x{B.shape[-1]})"
        )
    if A.dtype is not B.dtype:
        raise RuntimeError(
            f"linalg.solve_triangular: Expected A and B to have the same dtype, but found A of type {A.dtype} and B of type {B.dtype} instead"
        )
    out = apply(_SOLVE_TRIANGULAR, A, B, upper=upper)
    if out._node is not None:
        out._node.save_versions(A, B)
    return out


def _solve_triangular_impl(A, B, upper):
    a = np.triu(A._data) if upper else np.tril(A._data)
    batch = np.broadcast_shapes(a.shape[:-2], B._data.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(B._data, batch + B._data.shape[-2:])
    X = np.linalg.solve(a, b).astype(B._data.dtype, copy=False)
    return X, {"out": X}  # the node keeps the solution: its gradient rule reads it


def _solve_triangular_meta(A, B, upper):
    batch = np.broadcast_shapes(A._data.shape[:-2], B._data.shape[:-2])
    return _empty(batch + B._data.shape[-2:], B._data.dtype, B), {"out": None}


_SOLVE_TRIANGULAR = Primitive("solve_triangular", SolveTriangular, _solve_triangular_impl, extras=True)
_SOLVE_TRIANGULAR.register("meta", _solve_triangular_meta)


def _fw_attach(node, t) -> None:
    """Forward over reverse: the rebuilt output carries its tangents (``ember.autograd.forward_ad``)."""
    from ember.autograd.forward_ad import attach_out_tangents

    attach_out_tangents(node, t)
