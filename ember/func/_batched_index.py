"""Indexing with a batched index tensor inside ``vmap``: ``x[idx]`` where ``idx`` is batched.

The key is converted to arrays before the dispatch point, which a batched index (a shape-only
array outside the vmap handler) cannot be, so ``ember.ops.index.getitem`` hands such keys here.
One batched integer index (with slices, integers, None or Ellipsis around it) is a basic read
with a slice in its place, then one ``gather`` along that dim, whose batching rule runs it on
the physical tensors. A batched bool mask raises PyTorch's error (a data-dependent shape).

Example:
    >>> import ember
    >>> from ember.func import vmap
    >>> vmap(lambda row, i: row[i])(ember.arange(6.0).reshape(2, 3), ember.tensor([[2], [0]]))
    tensor([[2.],
            [3.]])
"""

from __future__ import annotations

from ember.tensor import Tensor

__all__ = ["has_batched", "getitem_batched"]


def has_batched(key) -> bool:
    """True when a key holds a tensor of an open vmap level (a BatchedTensor)."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, Tensor) and getattr(k, "_level", None) is not None for k in keys)


def getitem_batched(x: Tensor, key) -> Tensor:
    keys = key if isinstance(key, tuple) else (key,)
    tensors = [i for i, k in enumerate(keys) if isinstance(k, Tensor)]
    if any(keys[i].dtype.is_floating_point for i in tensors):
        raise IndexError(
            f"tensors used as indices must be long, int, byte or bool tensors (got {keys[tensors[0]].dtype})"
        )
    if any(keys[i].dtype.name in ("bool", "uint8") for i in tensors):
        raise RuntimeError(
            "vmap: We do not support batching operators that can support dynamic shape. Attempting to batch over "
            "indexing with a boolean mask."
        )
    if len(tensors) != 1 or any(isinstance(k, (list, bool)) for k in keys):
        raise NotImplementedError(
            "vmap: indexing with a batched index tensor supports one index tensor (with slices, integers, None "
            "and Ellipsis around it) in Ember"
        )
    p = tensors[0]
    idx = keys[p]
    # the dim the index reads, after the basic part of the key: integers before it drop their dims
    ell = [i for i, k in enumerate(keys) if k is Ellipsis]
    if ell and ell[0] < p:  # counted from the end: the dims after the index
        after = sum(1 for k in keys[p + 1 :] if k is not None)
        dim_in = x.dim() - after - 1
    else:
        dim_in = sum(1 for k in keys[:p] if k is not None and k is not Ellipsis)
    dropped = sum(1 for k in keys[:p] if isinstance(k, int))
    added = sum(1 for k in keys[:p] if k is None)
    basic = x[keys[:p] + (slice(None),) + keys[p + 1 :]]
    d = dim_in - dropped + added
    moved = basic.movedim(d, 0)
    size, rest = moved.shape[0], tuple(moved.shape[1:])
    flat = moved.reshape(size, -1)
    i = idx.reshape(-1)
    if i.numel():  # PyTorch's bounds check, with the index values read on the physical tensor
        phys = idx._value
        while getattr(phys, "_level", None) is not None:  # nested vmaps: the outermost value
            phys = phys._value
        lo, hi = int(phys.min()), int(phys.max())
        if hi >= size or lo < -size:
            bad = hi if hi >= size else lo
            raise IndexError(f"index {bad} is out of bounds for dimension {dim_in} with size {size}")
    i = i + (i < 0).long() * size
    out = flat.gather(0, i.unsqueeze(1).expand(i.shape[0], flat.shape[1]))
    out = out.reshape(tuple(idx.shape) + rest)
    k = idx.dim()
    return out.movedim(tuple(range(k)), tuple(range(d, d + k))) if k and d else out
