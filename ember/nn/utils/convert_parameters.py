"""``parameters_to_vector`` / ``vector_to_parameters``: flatten parameters into one vector and back."""

from __future__ import annotations

from collections.abc import Iterable

from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated (differentiable).

    Example:
        >>> import ember
        >>> ember.nn.utils.parameters_to_vector(ember.nn.Linear(2, 3).parameters()).shape
        ember.Size([9])
    """
    from ember.ops.movement import cat

    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of ``vec`` into the parameters (in place)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n
