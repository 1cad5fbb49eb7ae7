"""PyTorch's legacy typed constructors: ``ember.FloatTensor``, ``ember.LongTensor``, ...

Each is a class whose call builds an ordinary :class:`ember.Tensor` of one dtype, and whose
``isinstance`` check is true only for tensors of that dtype on that device kind (a metaclass
``__instancecheck__``, as PyTorch's ``torch.tensortype`` does). ``Tensor.type()`` names a tensor
with PyTorch's own strings (``'torch.FloatTensor'``, ``'torch.cuda.LongTensor'``), because PyTorch
programs compare those strings; ``Tensor.type(t)`` accepts a class, a dtype or such a string (with
``torch.`` or ``ember.`` prefix) and converts.

Example:
    >>> import ember
    >>> x = ember.LongTensor(range(3))
    >>> x.dtype, isinstance(x, ember.LongTensor), isinstance(x, ember.FloatTensor)
    (ember.int64, True, False)
    >>> x.type(), x.type(ember.FloatTensor).dtype
    ('torch.LongTensor', ember.float32)
"""

from __future__ import annotations

from ember import _dtype
from ember.tensor import Size, Tensor

__all__ = [
    "FloatTensor",
    "DoubleTensor",
    "HalfTensor",
    "LongTensor",
    "IntTensor",
    "ShortTensor",
    "ByteTensor",
    "CharTensor",
    "BoolTensor",
    "CPU_TYPES",
    "CUDA_TYPES",
    "type_name",
    "type_method",
    "set_default_tensor_type",
]

# Legacy name -> dtype, in PyTorch's order (no BFloat16Tensor: this branch has no bfloat16 dtype).
_NAMES = {
    "Float": _dtype.float32,
    "Double": _dtype.float64,
    "Half": _dtype.float16,
    "Long": _dtype.int64,
    "Int": _dtype.int32,
    "Short": _dtype.int16,
    "Byte": _dtype.uint8,
    "Char": _dtype.int8,
    "Bool": _dtype.bool_,
}
_BY_DTYPE = {d: name for name, d in _NAMES.items()}


class _TensorType(type):
    """Metaclass of the legacy classes: ``isinstance(x, ember.LongTensor)`` checks dtype and device."""

    dtype: _dtype.dtype
    is_cuda: bool

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, Tensor) and obj.dtype is cls.dtype and obj.is_cuda == cls.is_cuda

    def __repr__(cls) -> str:
        return f"<class '{cls._type_name.replace('torch.', 'ember.', 1)}'>"


class _LegacyTensor(metaclass=_TensorType):
    """Base of the typed constructors; calling one returns an :class:`ember.Tensor`."""

    dtype = _dtype.float32
    is_cuda = False
    _type_name = "torch.FloatTensor"

    def __new__(cls, *args, device=None, **kwargs) -> Tensor:
        from ember.ops.creation import tensor, zeros

        if kwargs:
            raise TypeError(
                f"new() received an invalid combination of arguments - got keywords {sorted(kwargs)}; "
                f"{cls.__name__} accepts only data or sizes, and device="
            )
        dev = "cuda" if cls.is_cuda else (device or "cpu")
        if cls.is_cuda:
            from ember import cuda

            if not cuda.is_available():
                raise TypeError(f"type {cls._type_name} not available: no CUDA device is usable (CuPy and a GPU)")
        if len(args) == 1 and not isinstance(args[0], (int, Size)):
            data = args[0]
            if isinstance(data, Tensor):
                if data.dtype is not cls.dtype:
                    raise TypeError(f"expected {cls._type_name} (got {data.type()})")
                return data.detach()  # shares memory with the argument, as in PyTorch
            if isinstance(data, (float, bool)) or not hasattr(data, "__len__") and not hasattr(data, "__iter__"):
                raise TypeError(f"new(): data must be a sequence (got {type(data).__name__})")
            if not hasattr(data, "__len__"):
                data = list(data)
            return tensor(data, dtype=cls.dtype, device=dev)
        sizes = tuple(args[0]) if len(args) == 1 and isinstance(args[0], Size) else args
        return zeros(*sizes, dtype=cls.dtype, device=dev) if sizes else zeros(0, dtype=cls.dtype, device=dev)


def _make(name: str, d: _dtype.dtype, cuda: bool) -> type:
    type_name = f"torch.{'cuda.' if cuda else ''}{name}Tensor"
    doc = f"``{type_name}``: ``{name}Tensor(data)`` or ``{name}Tensor(*sizes)`` gives a {d.name} tensor."
    attrs = {"dtype": d, "is_cuda": cuda, "_type_name": type_name, "__doc__": doc, "__module__": "ember"}
    return _TensorType(f"{name}Tensor", (_LegacyTensor,), attrs)


CPU_TYPES = {f"{n}Tensor": _make(n, d, False) for n, d in _NAMES.items()}
CUDA_TYPES = {f"{n}Tensor": _make(n, d, True) for n, d in _NAMES.items()}
FloatTensor, DoubleTensor, HalfTensor, LongTensor, IntTensor, ShortTensor, ByteTensor, CharTensor, BoolTensor = (
    CPU_TYPES.values()
)


def type_name(x: Tensor) -> str:
    """PyTorch's type string of ``x``: ``'torch.FloatTensor'``, ``'torch.cuda.LongTensor'``."""
    return f"torch.{'cuda.' if x.is_cuda else ''}{_BY_DTYPE[x.dtype]}Tensor"


def _parse(dtype) -> tuple:
    """(dtype, device or None) for a legacy class, an Ember dtype or a type string."""
    if isinstance(dtype, _TensorType):
        return dtype.dtype, ("cuda" if dtype.is_cuda else "cpu")
    if isinstance(dtype, str):
        text = dtype
        for prefix in ("torch.", "ember."):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        else:
            raise ValueError(f"invalid type: '{dtype}'")
        cuda = text.startswith("cuda.")
        cls = (CUDA_TYPES if cuda else CPU_TYPES).get(text[5:] if cuda else text)
        if cls is None:
            raise ValueError(f"invalid type: '{dtype}'")
        return cls.dtype, ("cuda" if cuda else "cpu")
    return _dtype.to_dtype(dtype), None


def type_method(self: Tensor, dtype=None, non_blocking: bool = False, **kwargs):
    """``x.type()`` is PyTorch's type string; ``x.type(T)`` converts to class/dtype/string ``T``.

    Returns self when nothing changes, as PyTorch does.
    """
    if kwargs:
        raise TypeError(f"type() got unexpected keyword arguments {sorted(kwargs)}")
    if dtype is None:
        return type_name(self)
    d, dev = _parse(dtype)
    if dev is None or (dev == "cuda") == self.is_cuda:
        return self.to(dtype=d)
    return self.to(device=dev, dtype=d)


def set_default_tensor_type(t) -> None:
    """Deprecated in PyTorch 2.1 (and warned about, as there): ``set_default_dtype`` of ``t``'s dtype.

    ``t`` is a legacy class or its name, and must be a floating type. CUDA types would also move
    the default device in PyTorch; Ember has no default-device setting, so they raise.
    """
    import warnings

    from ember import _dtype as dtypes

    warnings.warn(
        "torch.set_default_tensor_type() is deprecated as of PyTorch 2.1, please use torch.set_default_dtype() "
        "and torch.set_default_device() as alternatives.",
        UserWarning,
        stacklevel=2,
    )
    d, dev = _parse(t)
    if dev == "cuda":
        raise TypeError(
            f"set_default_tensor_type: {t} would make CUDA the default device, which Ember does not support"
        )
    if not d.is_floating_point:
        raise TypeError("only floating-point types are supported as the default type")
    dtypes.defaults.float = d
