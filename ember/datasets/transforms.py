"""A few image transforms in the spirit of ``torchvision.transforms``, for the datasets here.

Example:
    >>> import numpy as np
    >>> from ember.datasets import transforms as T
    >>> t = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    >>> t(np.full((2, 2), 255, dtype=np.uint8)).tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.tensor import Tensor, _wrap

__all__ = ["Compose", "ToTensor", "Normalize", "Lambda"]


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    """A ``(H, W)`` or ``(H, W, C)`` uint8 array to a float32 tensor ``(C, H, W)`` in [0, 1]."""

    def __call__(self, pic) -> Tensor:
        a = np.asarray(pic)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise ValueError(f"ToTensor: expected an (H, W) or (H, W, C) array, got shape {a.shape}")
        out = a.transpose(2, 0, 1).astype(np.float32)
        if a.dtype == np.uint8:
            out /= np.float32(255.0)
        return _wrap(np.ascontiguousarray(out))


class Normalize:
    """``(x - mean) / std`` per channel of a ``(C, H, W)`` float tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if (self.std == 0).any():
            raise ValueError(f"Normalize: std evaluated to zero after conversion to float32, got {list(std)}")

    def __call__(self, x: Tensor) -> Tensor:
        return _wrap(((x.numpy() - self.mean) / self.std).astype(x.numpy().dtype))


class Lambda:
    """Wrap a function as a transform."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, x: Any) -> Any:
        return self.fn(x)
