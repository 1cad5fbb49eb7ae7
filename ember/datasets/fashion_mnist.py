"""Fashion-MNIST: 28x28 grey images of clothes in 10 classes, read from local IDX files.

By default the files come from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, gzipped); any directory holding the four standard files,
gzipped or not (directly, or under ``FashionMNIST/raw/`` as torchvision lays them out), works as
``root``. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.datasets.idx import IDXFormatError, read_idx
from ember.ops.creation import from_numpy
from ember.tensor import Tensor, _wrap
from ember.utils.data.dataset import Dataset

__all__ = ["DEBIAN_ROOT", "load_arrays", "FashionMNIST"]

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(root: str, stem: str) -> str:
    """The path of ``stem`` (or ``stem.gz``) under ``root`` or ``root/FashionMNIST/raw``."""
    tried = []
    for folder in (root, os.path.join(root, "FashionMNIST", "raw")):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
            tried.append(path)
    hint = " (install the Debian package dataset-fashion-mnist)" if root == DEBIAN_ROOT else ""
    raise FileNotFoundError(f"FashionMNIST: {stem}[.gz] not found; looked for {tried}{hint}")


def load_arrays(root: str | None = None, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One split as NumPy arrays: images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)``.

    Example:
        >>> from ember.datasets.fashion_mnist import load_arrays
        >>> images, labels = load_arrays(train=False)  # doctest: +SKIP
        >>> images.shape, labels.shape  # doctest: +SKIP
        ((10000, 28, 28), (10000,))
    """
    root = DEBIAN_ROOT if root is None else os.fspath(root)
    image_stem, label_stem = _FILES[bool(train)]
    image_path, label_path = _find(root, image_stem), _find(root, label_stem)
    images = read_idx(image_path, (None, 28, 28))
    labels = read_idx(label_path, (None,))
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise IDXFormatError(
            f"FashionMNIST: expected unsigned-byte IDX data, got {images.dtype} in {image_path} "
            f"and {labels.dtype} in {label_path}"
        )
    if len(images) != len(labels):
        raise IDXFormatError(
            f"FashionMNIST: {image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(FashionMNIST.classes):
        raise IDXFormatError(f"FashionMNIST: {label_path} has label {labels.max()}, expected 0..9")
    return images, labels.astype(np.int64)


class FashionMNIST(Dataset):
    """The Fashion-MNIST train (60,000) or test (10,000) split.

    Items are ``(image, label)``: ``image`` a float32 tensor ``(1, 28, 28)`` in [0, 1], or, when
    ``transform`` is given, ``transform(uint8 NumPy array (28, 28))`` (the array a PIL image would
    convert to, so ``ember.datasets.transforms.ToTensor`` and friends apply); ``label`` an int.
    ``.data`` (uint8 ``(N, 28, 28)``) and ``.targets`` (int64) hold the whole split, as in
    torchvision. For fast training, :meth:`tensors` gives the whole split as two tensors at once.

    Example:
        >>> from ember.datasets import FashionMNIST
        >>> ds = FashionMNIST(train=False)  # doctest: +SKIP
        >>> x, y = ds[0]  # doctest: +SKIP
        >>> x.shape, ds.classes[y]  # doctest: +SKIP
        (ember.Size([1, 28, 28]), 'Ankle boot')
    """

    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable[[np.ndarray], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        download: bool = False,
    ) -> None:
        # download is accepted for torchvision compatibility: the files are local or nothing.
        self.root = DEBIAN_ROOT if root is None else os.fspath(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        images, labels = load_arrays(self.root, train)
        self._images = images
        self._labels = labels
        self.data: Tensor = from_numpy(images)
        self.targets: Tensor = from_numpy(labels)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int):
        img = self._images[index]
        target = int(self._labels[index])
        if self.transform is not None:
            img = self.transform(img)
        else:
            img = _wrap((img.astype(np.float32) / np.float32(255.0)).reshape(1, 28, 28))
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def arrays(self, flatten: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as NumPy: float32 images in [0, 1] ``(N, 1, 28, 28)`` (or ``(N, 784)``), int64 labels.

        No transform is applied.
        """
        x = self._images.astype(np.float32) / np.float32(255.0)
        x = x.reshape(len(x), 784) if flatten else x.reshape(len(x), 1, 28, 28)
        return x, self._labels.copy()

    def tensors(self, flatten: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`arrays` as ember tensors, ready for ``TensorDataset`` or manual batching."""
        x, y = self.arrays(flatten)
        return from_numpy(x), from_numpy(y)

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return f"Dataset FashionMNIST\n    Number of datapoints: {len(self)}\n    Root location: {self.root}\n    Split: {split}"
