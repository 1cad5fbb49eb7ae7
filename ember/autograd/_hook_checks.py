"""Checks on what user code hands back to autograd: a hook's replacement gradient and a custom
Function's gradients, with PyTorch's errors.

A hook that returns a gradient of another size or dtype (``g[:1]``, ``g.sum()``, ``g.double()``)
would otherwise reach ``.grad`` and then the optimizer, which broadcasts it silently.

Example:
    >>> import ember
    >>> from ember.autograd._hook_checks import checked_hook_result
    >>> g = ember.ones(3)
    >>> checked_hook_result(lambda g: g * 2, g, g * 2).tolist()
    [2.0, 2.0, 2.0]
"""

from __future__ import annotations

__all__ = ["checked_hook_result", "legacy_type_name"]

_LEGACY = {
    "float32": "FloatTensor",
    "float64": "DoubleTensor",
    "float16": "HalfTensor",
    "bfloat16": "BFloat16Tensor",
    "int64": "LongTensor",
    "int32": "IntTensor",
    "int16": "ShortTensor",
    "int8": "CharTensor",
    "uint8": "ByteTensor",
    "bool": "BoolTensor",
}


def legacy_type_name(t) -> str:
    """``ember.FloatTensor`` style name of a tensor's dtype (PyTorch's ``Tensor.type()``)."""
    return "ember." + _LEGACY.get(t.dtype.name, t.dtype.name)


def _hook_name(hook) -> str:
    return getattr(hook, "__name__", type(hook).__name__)


def checked_hook_result(hook, old, new):
    """``new`` (what ``hook`` returned for the gradient ``old``) if it is a tensor of the same size
    and dtype; PyTorch's error otherwise."""
    from ember.tensor import Tensor

    if not isinstance(new, Tensor):
        raise TypeError(f"expected Variable, but hook returned '{type(new).__name__}'")
    if tuple(new.shape) != tuple(old.shape):
        raise RuntimeError(f"hook '{_hook_name(hook)}' has changed the size of value")
    if new.dtype != old.dtype or new.device != old.device:
        raise RuntimeError(
            f"hook '{_hook_name(hook)}' has changed the type of value "
            f"(was {legacy_type_name(old)} got {legacy_type_name(new)})"
        )
    return new
