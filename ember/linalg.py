"""``ember.linalg``: the norms of ``torch.linalg`` (the matrix decompositions are not in Ember yet)."""

from __future__ import annotations

from ember.ops.decomp import cholesky, solve_triangular
from ember.ops.reduce import norm, vector_norm

__all__ = ["vector_norm", "norm", "matrix_norm", "cholesky", "solve_triangular"]


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim: bool = False):
    """The Frobenius norm over the two matrix dims (other orders need decompositions Ember lacks).

    Example:
        >>> import ember
        >>> ember.linalg.matrix_norm(ember.ones(2, 2)).item()
        2.0
    """
    if ord != "fro":
        raise RuntimeError(f"linalg.matrix_norm: ord={ord!r} is not supported by Ember (only 'fro')")
    return vector_norm(A, 2, dim, keepdim)
