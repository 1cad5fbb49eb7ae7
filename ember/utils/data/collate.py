"""Collation: turning a list of samples into one batch, with PyTorch's ``default_collate`` rules.

Tensors (and NumPy arrays) are stacked along a new first dimension; Python floats become a
float64 tensor, ints an int64 tensor, bools a bool tensor; strings stay a list; dicts, tuples,
lists and namedtuples are collated field by field (tuples come back as lists, as in PyTorch).
"""

from __future__ import annotations

import collections.abc
from typing import Any

import numpy as np

from ember.ops.creation import as_tensor, tensor
from ember.ops.movement import stack
from ember.tensor import Tensor

__all__ = ["default_collate", "default_convert"]

_ERR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _numeric_array(a: np.ndarray) -> bool:
    # String and object arrays have no tensor dtype.
    return a.dtype.kind in "biufV"


def default_collate(batch: list) -> Any:
    """Stack a list of samples into a batch (see the module docstring for the rules).

    Example:
        >>> import ember
        >>> from ember.utils.data import default_collate
        >>> default_collate([(ember.zeros(2), 1), (ember.ones(2), 2)])
        [tensor([[0., 0.],
                [1., 1.]]), tensor([1, 2])]
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        shapes = [tuple(b.shape) if isinstance(b, Tensor) else None for b in batch]
        for i, s in enumerate(shapes):
            if s != shapes[0]:
                raise RuntimeError(
                    f"stack expects each tensor to be equal size, but got {list(shapes[0])} at entry 0 "
                    f"and {list(s) if s is not None else type(batch[i]).__name__} at entry {i}"
                )
        return stack(batch, 0)
    if isinstance(elem, np.ndarray):
        if not _numeric_array(elem):
            raise TypeError(_ERR.format(elem.dtype))
        return default_collate([as_tensor(np.asarray(b)) for b in batch])
    if isinstance(elem, np.generic) and not isinstance(elem, (np.str_, np.bytes_)):
        if not _numeric_array(np.asarray(elem)):
            raise TypeError(_ERR.format(type(elem)))
        return as_tensor(np.asarray(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype="float64")
    if isinstance(elem, int):  # bools too: tensor() infers bool for them, as torch.tensor does
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        out = {key: default_collate([d[key] for d in batch]) for key in elem}
        try:
            return type(elem)(out)
        except TypeError:  # a Mapping type whose constructor takes something else
            return out
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(list(samples)) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(e) != size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = [list(samples) for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return [default_collate(samples) for samples in transposed]
        try:
            return type(elem)([default_collate(samples) for samples in transposed])
        except TypeError:
            return [default_collate(samples) for samples in transposed]
    raise TypeError(_ERR.format(type(elem)))


def default_convert(data: Any) -> Any:
    """Turn NumPy arrays and scalars inside ``data`` into tensors, without batching.

    This is the DataLoader's ``collate_fn`` when ``batch_size=None``.

    Example:
        >>> import numpy as np
        >>> from ember.utils.data import default_convert
        >>> default_convert({"x": np.array([1, 2])})
        {'x': tensor([1, 2])}
    """
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return as_tensor(data) if _numeric_array(data) else data
    if isinstance(data, np.generic) and _numeric_array(np.asarray(data)):
        return as_tensor(np.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        out = {key: default_convert(v) for key, v in data.items()}
        try:
            return type(data)(out)
        except TypeError:
            return out
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
