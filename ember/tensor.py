"""Tensor: one node of the computational graph.

A Tensor holds a backend array (``_data``), and, when it was produced by an op in grad mode, the
op's record (``_node``: a :class:`~ember.autograd.node.Node` with the op's inputs). Leaves made by
the user with ``requires_grad=True`` have no node and collect ``.grad``.

The arithmetic and movement methods (``x + y``, ``x.sum()``, ``x.view(...)``) are the functions of
``ember.ops``, named one by one in the mixin classes of ``ember/_tensor_methods.py``, which
:class:`Tensor` inherits; :class:`TensorBase` holds what is particular to the Tensor object:
attributes, autograd entry points, conversion and printing.
"""

from __future__ import annotations

import weakref

import numpy as np

import ember.autograd as _autograd  # Tensor.backward: a function-level import would cost 0.2 us a call
from ember import _dtype
from ember._device import CPU
from ember._mode import mode as _mode
from ember._mutations import GRAD_READS, MUTATIONS  # compiled steps' guards: ember/_mutations.py
from ember.autograd.node import tick

__all__ = ["Size", "TensorBase", "Tensor"]

_BY_NP = _dtype._BY_NP
_new = object.__new__


class Size(tuple):
    """The shape of a tensor: a tuple that prints like ``ember.Size([2, 3])``.

    Example:
        >>> import ember
        >>> ember.zeros(2, 3).shape
        ember.Size([2, 3])
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ember.Size({list(self)})"

    def __getitem__(self, key):
        out = tuple.__getitem__(self, key)
        return Size(out) if isinstance(key, slice) else out

    def __add__(self, other) -> Size:
        return Size(tuple.__add__(self, tuple(other)))

    def __radd__(self, other) -> Size:
        return Size(tuple(other) + tuple(self))

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n


class TensorBase:
    """What is particular to the Tensor object: attributes, autograd entry points, conversion and
    printing. :class:`Tensor` adds the op methods; the ops check ``isinstance(x, TensorBase)``
    (every Tensor is one) so that they can be imported before :class:`Tensor` is defined."""

    # Class-level defaults keep tensor creation cheap: an op sets only _data (and, in grad mode,
    # _node and _requires_grad).
    _node = None
    _requires_grad = False
    _grad = None
    _vc = None  # version counter [int], shared with views; made on the first in-place write
    _base = None  # the tensor this one is a view of
    _hooks = None
    _post_acc_hooks = None  # called with the leaf once its .grad is final in a backward
    _views = None  # weak references to views with a grad node, re-derived after in-place writes
    _device = CPU
    _view_of = None  # the view node of a view made in grad mode (ops.movement)
    _no_grad_view = False  # a view made under no_grad (ops.movement)
    __array_priority__ = 1000  # make `ndarray op Tensor` defer to Tensor's reflected operators

    def __new__(cls, *args, **kwargs):
        # The ops know this class only (ember.ops._base.Tensor): `Tensor.__new__(Tensor)` there
        # still makes a full Tensor, with its methods. Hot paths call object.__new__ directly.
        return _new(Tensor if cls is TensorBase else cls)

    def __init__(self, *args, dtype=None, device=None, requires_grad: bool = False):
        from ember.ops.creation import _tensor_init

        _tensor_init(self, args, dtype, device, requires_grad)

    # ----- basic attributes -----
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        """The shape, or one dimension's length."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_wrap_dim(dim, self._data.ndim, "size")]

    @property
    def dtype(self) -> _dtype.dtype:
        return _BY_NP[self._data.dtype]

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        return self._data.size

    nelement = numel

    def element_size(self) -> int:
        return self._data.itemsize

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    def stride(self, dim: int | None = None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[_wrap_dim(dim, self._data.ndim, "stride")]

    def is_contiguous(self, memory_format=None) -> bool:
        return self._data.flags.c_contiguous

    def is_floating_point(self) -> bool:
        return self._data.dtype.kind in "fV"

    def is_complex(self) -> bool:
        return False

    def type(self, dtype=None, non_blocking: bool = False, **kwargs):
        """PyTorch's type string (``'torch.FloatTensor'``), or a conversion to ``dtype``: a legacy
        class (``ember.LongTensor``), a dtype or such a string."""
        from ember._legacy_tensors import type_method

        return type_method(self, dtype, non_blocking, **kwargs)

    def data_ptr(self) -> int:
        return self._data.__array_interface__["data"][0] if self._device is CPU else int(self._data.data.ptr)

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __hash__(self) -> int:
        return id(self)

    # ----- autograd -----
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if self._node is not None and not value:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        if value and self._data.dtype.kind not in "fV":
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients (got {self.dtype})")
        value = bool(value)
        if value is not self._requires_grad:
            MUTATIONS[0] += 1
        self._requires_grad = value

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self):
        GRAD_READS[0] += 1  # a compiled step's reuse of its gradients' arrays (ember/_mutations.py)
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got {type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(
                    f"assigned grad has data of a different size: {list(value.shape)} vs {list(self.shape)}"
                )
        if value is not self._grad:
            MUTATIONS[0] += 1
        self._grad = value

    @property
    def grad_fn(self):
        return self._node

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def _version(self) -> int:
        vc = self._vc
        if vc is None and self._base is not None:
            vc = self._base._vc  # the base got its counter after this view was made
        return 0 if vc is None else vc[0]

    def _bump_version(self) -> None:
        """Count an in-place write, and stamp it with the graph clock (saved-input checks)."""
        vc = self._vc
        if vc is None:
            base = self._base
            if base is not None and base._vc is not None:
                vc = base._vc
            else:
                vc = [0]
                if base is not None:
                    base._vc = vc
            self._vc = vc
        vc[0] += 1
        if len(vc) == 1:
            vc.append(tick())
        else:
            vc[1] = tick()

    def backward(self, gradient=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is required unless self has one element; ``retain_graph`` (default:
        ``create_graph``) keeps the saved values for another backward; ``create_graph`` records
        the backward pass so its gradients can be differentiated again.
        """
        _autograd.backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._node is not None:
            self._node.retained = weakref.ref(self)

    @property
    def retains_grad(self) -> bool:
        node = self._node
        return node is not None and node.retained is not None and node.retained() is self

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor replaces it.

        Example:
            >>> import ember
            >>> x = ember.ones(2, requires_grad=True)
            >>> h = x.register_hook(lambda g: g * 10)
            >>> x.sum().backward()
            >>> x.grad
            tensor([10., 10.])
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._node is not None:
            return self._node.register_hook(hook)
        if self._hooks is None:
            self._hooks = []
        from ember.autograd.node import _RemovableHandle

        self._hooks.append(hook)
        return _RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` once this leaf's ``.grad`` holds its final value in a backward pass.

        It fires as soon as the leaf's last gradient contribution is accumulated, while the
        rest of the backward still runs (DDP starts a bucket's all-reduce from here).

        Example:
            >>> import ember
            >>> w = ember.ones(2, requires_grad=True)
            >>> h = w.register_post_accumulate_grad_hook(lambda p: print(p.grad))
            >>> (w * 3).sum().backward()
            tensor([3., 3.])
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._node is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if self._post_acc_hooks is None:
            self._post_acc_hooks = []
        from ember.autograd.node import _RemovableHandle

        self._post_acc_hooks.append(hook)
        return _RemovableHandle(self._post_acc_hooks, hook)

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, cut from the graph."""
        out = _new(Tensor)
        out._data = self._data
        out._device = self._device
        # Shares memory and the version counter, but is no autograd view: an in-place op on it
        # gives it its own history and leaves self's untouched, as in PyTorch.
        out._vc = self._shared_vc()
        return out

    def detach_(self) -> Tensor:
        MUTATIONS[0] += 1
        self._node = None
        self._requires_grad = False
        return self

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        MUTATIONS[0] += 1
        self._data = value._data

    def _shared_vc(self) -> list:
        """This tensor's version counter, made on demand, shared with its base."""
        if self._vc is None:
            base = self._base
            if base is not None:
                if base._vc is None:
                    base._vc = [0]
                self._vc = base._vc
            else:
                self._vc = [0]
        return self._vc

    def _owned(self) -> Tensor:
        """Self if it owns its memory, else a copy (used for freshly accumulated gradients)."""
        d = self._data
        if d.base is None and d.flags.c_contiguous and (type(d) is not np.ndarray or d.flags.writeable):
            return self
        if getattr(d, "is_meta", False):  # under capture (ember.compile): the copy is a recorded op
            return self.clone()
        return _wrap(d.copy(), self._device)

    def _accumulate_(self, other: Tensor) -> Tensor:
        if getattr(other._data, "is_meta", False):  # under capture (ember.compile): a recorded add_
            same = other._data.shape == self._data.shape and other._data.dtype == self._data.dtype
            return self.add_(other) if same else self + other
        if other._data.shape == self._data.shape and other._data.dtype == self._data.dtype:
            np.add(self._data, other._data, out=self._data)
            return self
        return self + other

    # ----- conversion -----
    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The data as a NumPy array sharing memory (CPU tensors)."""
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "numpy")
        if self._requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if self._device is not CPU:
            if not force:
                raise TypeError(
                    f"can't convert {self._device.type} device type tensor to numpy. "
                    "Use Tensor.cpu() to copy the tensor to host memory first."
                )
            return self._device.backend.to_host(self._data)
        return self._data

    def __array__(self, dtype=None, copy=None):
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "__array__")
        arr = self._device.backend.to_host(self._data)
        return arr if dtype is None else arr.astype(dtype)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "item")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        return self._data.reshape(-1)[0].item()

    def tolist(self):
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "tolist")
        return self._device.backend.to_host(self._data).tolist()

    def __bool__(self) -> bool:
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "__bool__")
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {'no' if self._data.size == 0 else 'more than one'} value is ambiguous"
            )
        return bool(self._data.reshape(-1)[0])

    def __int__(self) -> int:
        return int(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __repr__(self) -> str:
        if _mode.data_read is not None:  # ember.compile: a graph break
            _mode.data_read(self, "__repr__")
        from ember._repr import tensor_repr

        return tensor_repr(self)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self._data.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __reduce_ex__(self, protocol):
        return (_rebuild, (self._device.backend.to_host(self._data).copy(), self._requires_grad))

    def __deepcopy__(self, memo):
        if self._node is not None:
            raise RuntimeError(
                "Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
                f"protocol at the moment (this one has grad_fn={self._node.name()}); detach() it first."
            )
        out = _wrap(self._data.copy(), self._device)
        out._requires_grad = self._requires_grad
        if self._grad is not None:
            out._grad = _wrap(self._grad._data.copy(), self._device)
        memo[id(self)] = out
        return out

    @staticmethod
    def _from(data, like) -> Tensor:
        """A graph-less tensor of ``data`` (an array or a number) on ``like``'s device."""
        if not hasattr(data, "shape"):
            data = np.asarray(data)
        return _wrap(data, like._device)


def _rebuild(array, requires_grad):
    t = _wrap(array)
    t._requires_grad = requires_grad
    return t


def _wrap(data, device=CPU) -> Tensor:
    """A new graph-less tensor around a backend array."""
    t = _new(Tensor)
    t._data = data
    if device is not CPU:
        t._device = device
    return t


def _wrap_dim(dim: int, ndim: int, op: str = "") -> int:
    """Turn a possibly negative dim into an index, raising IndexError as PyTorch does."""
    lo = -ndim if ndim else -1
    hi = ndim - 1 if ndim else 0
    if not isinstance(dim, int):
        dim = int(dim)
    if dim < lo or dim > hi:
        raise IndexError(
            f"{op + ': ' if op else ''}Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})"
        )
    return dim % ndim if ndim else 0


# The ops import TensorBase, _wrap and _wrap_dim from above; the method mixins import the ops.
from ember._tensor_methods import (  # noqa: E402
    ArithmeticOps,
    ConversionOps,
    IndexingOps,
    InplaceOps,
    MathOps,
    MovementOps,
    ReductionOps,
)
from ember.ops import dispatch as _dispatch  # noqa: E402


class Tensor(TensorBase, ArithmeticOps, MathOps, ReductionOps, MovementOps, IndexingOps, InplaceOps, ConversionOps):
    """A multi-dimensional array that records the ops applied to it.

    Construct tensors with :func:`ember.tensor` and the other factories; ``ember.Tensor(data)``
    also works and gives the default float dtype, as in PyTorch.

    Example:
        >>> import ember
        >>> x = ember.tensor([1.0, 2.0], requires_grad=True)
        >>> (x * x).sum().backward()
        >>> x.grad
        tensor([2., 4.])
    """


# apply() makes its results of this class (the ops see TensorBase; see ember.ops.dispatch).
_dispatch.register_tensor_class(Tensor)
