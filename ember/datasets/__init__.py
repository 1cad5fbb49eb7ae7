"""``ember.datasets``: local datasets (Fashion-MNIST from IDX files, character-level text).

Example:
    >>> from ember.datasets import CharVocab
    >>> CharVocab.from_text("abba").stoi
    {'a': 0, 'b': 1}
"""

from ember.datasets import transforms
from ember.datasets.fashion_mnist import FashionMNIST
from ember.datasets.idx import IDXFormatError, read_idx, write_idx
from ember.datasets.text import CharTextDataset, CharVocab, kjv_path

__all__ = [
    "CharTextDataset",
    "CharVocab",
    "FashionMNIST",
    "IDXFormatError",
    "kjv_path",
    "read_idx",
    "transforms",
    "write_idx",
]
