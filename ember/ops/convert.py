"""Dtype and device conversion: ``Tensor.to``, ``float()``, ``cpu()``, ``cuda()``, ``type_as``."""

from __future__ import annotations

from ember import _dtype
from ember._device import CPU, to_device
from ember._device import device as _device_cls
from ember.autograd.node import Node
from ember.ops._base import Tensor
from ember.ops.dispatch import Primitive, apply

__all__ = [
    "bool_",
    "byte",
    "char",
    "cpu",
    "cuda",
    "double",
    "float_",
    "half",
    "int_",
    "long",
    "parse_to_args",
    "short",
    "to",
    "type_",
    "type_as",
]


class Cast(Node):
    """Dtype and/or device change; the gradient goes back in the source's dtype and device."""

    __slots__ = ("dtype", "device")
    saves_values = False

    def backward(self, g):
        x = self.inputs[0]
        return (_convert(g, x.dtype if x._data.dtype.kind == "f" else g.dtype, x._device, False),)


def _convert(x: Tensor, dt, dev, copy: bool) -> Tensor:
    same_dtype = dt is None or dt.np == x._data.dtype
    same_dev = dev is None or dev == x._device
    if same_dtype and same_dev and not copy:
        return x
    target = dev if dev is not None and dev.type != "cpu" else (x._device if same_dev else CPU)
    if dt is not None and not dt.is_floating_point and x._requires_grad:
        # Casting to an integer type cuts the graph, as in PyTorch.
        return apply(_TO_DETACHED, x, dtype=dt, device=x._device)
    return apply(_TO, x, dtype=dt, device=target)


def _to_impl(x, dtype, device):
    dt, dev = dtype, device
    arr = x._data
    same_dev = dev == x._device
    if not same_dev:
        arr = (
            x._device.backend.to_host(arr)
            if dev is CPU or dev.type == "cpu"
            else dev.backend.asarray(x._device.backend.to_host(arr))
        )
    if dt is not None and arr.dtype != dt.np:
        arr = arr.astype(dt.np)
    elif arr is x._data:
        arr = arr.copy()
    return arr


# The output lives on the ``device`` parameter's device (``apply`` reads it: ``out_device``).
_TO = Primitive("to", Cast, _to_impl, out_device=True)
_TO_DETACHED = Primitive("to_detached", None, _to_impl, out_device=True)


def parse_to_args(args, kwargs, op: str = "to") -> tuple:
    """(dtype, device, copy) from the argument forms of ``to``: ``to(dtype)``, ``to(device)``,
    ``to(device, dtype)``, ``to(other)`` and the keywords; shared by ``Tensor.to`` and ``Module.to``."""
    kwargs = dict(kwargs)
    dt = kwargs.pop("dtype", None)
    dev = kwargs.pop("device", None)
    copy = kwargs.pop("copy", False)
    kwargs.pop("non_blocking", None)
    kwargs.pop("memory_format", None)
    if kwargs:
        raise TypeError(f"{op}() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            dt, dev = a.dtype, a.device
        elif isinstance(a, _dtype.dtype):
            dt = a
        elif isinstance(a, (str, _device_cls, int)):
            dev = a
        elif a is not None:
            dt = _dtype.to_dtype(a)
    if dt is not None:
        dt = _dtype.to_dtype(dt)
    if dev is not None:
        dev = to_device(dev)
    return dt, dev, copy


def to(self: Tensor, *args, **kwargs) -> Tensor:
    """Convert dtype and/or device: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``.

    Returns self when nothing changes (unless ``copy=True``).
    """
    dt, dev, copy = parse_to_args(args, kwargs)
    return _convert(self, dt, dev, copy)


def _caster(target):
    def method(self, memory_format=None):
        return _convert(self, target, None, False)

    method.__name__ = target.name
    method.__doc__ = f"``self.to({target!r})``."
    return method


float_ = _caster(_dtype.float32)
double = _caster(_dtype.float64)
half = _caster(_dtype.float16)
long = _caster(_dtype.int64)
int_ = _caster(_dtype.int32)
short = _caster(_dtype.int16)
char = _caster(_dtype.int8)
byte = _caster(_dtype.uint8)
bool_ = _caster(_dtype.bool_)


def cpu(self: Tensor) -> Tensor:
    return _convert(self, None, CPU, False)


def cuda(self: Tensor, device=None, non_blocking: bool = False) -> Tensor:
    return _convert(
        self,
        None,
        to_device("cuda" if device is None else device if not isinstance(device, int) else f"cuda:{device}"),
        False,
    )


def type_as(self: Tensor, other: Tensor) -> Tensor:
    return _convert(self, other.dtype, None, False)


def type_(self: Tensor, dtype=None):
    """With no argument, the type name (``'ember.FloatTensor'``); else ``to(dtype)``."""
    if dtype is None:
        names = {
            "float32": "Float",
            "float64": "Double",
            "float16": "Half",
            "int64": "Long",
            "int32": "Int",
            "int16": "Short",
            "int8": "Char",
            "uint8": "Byte",
            "bool": "Bool",
        }
        return f"ember.{names[self.dtype.name]}Tensor"
    return _convert(self, _dtype.to_dtype(dtype), None, False)
