"""``Parameter`` (a tensor that a Module registers as learnable) and ``Buffer`` (module state).

Assigning a ``Parameter`` to a Module attribute registers it in ``_parameters``, so it shows up in
``parameters()`` and ``state_dict()``. A Parameter shares the memory of the tensor it wraps, as in
PyTorch, and ops on it produce ordinary tensors.
"""

from __future__ import annotations

from ember.tensor import Tensor, _wrap

__all__ = ["Parameter", "Buffer", "is_lazy"]


def _share(dst: Tensor, src: Tensor) -> None:
    dst._data = src._data
    dst._device = src._device


class Parameter(Tensor):
    """A tensor that is a module parameter (``requires_grad=True`` by default).

    Example:
        >>> import ember
        >>> p = ember.nn.Parameter(ember.zeros(2))
        >>> p.requires_grad, p.is_leaf
        (True, True)
    """

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from ember.ops.creation import empty

            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter(): data must be a Tensor, not {type(data).__name__}")
        _share(self, data)
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        out = Parameter(_wrap(self._data.copy(), self._device), self._requires_grad)
        if self._grad is not None:
            out._grad = _wrap(self._grad._data.copy(), self._device)
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self._device.backend.to_host(self._data).copy(), self._requires_grad))


def _rebuild_parameter(array, requires_grad):
    return Parameter(_wrap(array), requires_grad)


class Buffer(Tensor):
    """Marks a tensor as a buffer when assigned to a Module attribute (``module.x = Buffer(t)``).

    The module stores a plain tensor sharing ``data``; ``persistent=False`` keeps it out of the
    ``state_dict``.

    Example:
        >>> import ember
        >>> m = ember.nn.Module()
        >>> m.steps = ember.nn.Buffer(ember.zeros(()))
        >>> list(m.state_dict())
        ['steps']
    """

    def __init__(self, data: Tensor | None = None, *, persistent: bool = True):
        if data is None:
            from ember.ops.creation import empty

            data = empty(0)
        _share(self, data)
        self._requires_grad = data._requires_grad
        self.persistent = persistent


def is_lazy(param) -> bool:
    """Ember has no lazy (uninitialized) parameters; kept for PyTorch API parity."""
    return False
