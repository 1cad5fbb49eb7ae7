"""Deterministic mini-batches for ``ember train``, resumable at any step.

The order of an epoch depends only on (seed, epoch), so a run resumed at step k of an epoch
skips exactly the k batches it had already trained on and continues with the same data as an
uninterrupted run. Whole splits are held as arrays (Fashion-MNIST is 47 MB as uint8), so a
batch is one fancy-indexing copy instead of ``batch_size`` Python calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ember

__all__ = ["ImageBatches", "TextBatches"]


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, epoch]))


@dataclass
class ImageBatches:
    """Image classification batches: (N, 1, H, W) float32 in [0, 1] and int64 labels."""

    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int
    batch_size: int
    shuffle: bool
    drop_last: bool = False

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, seed: int, epoch: int, skip: int = 0):
        """Yield the batches of one epoch, starting after the first ``skip``."""
        n = len(self.labels)
        order = _epoch_rng(seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        for b in range(skip, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx].astype(np.float32)[:, None] * np.float32(1 / 255)
            yield ember.from_numpy(x), ember.from_numpy(self.labels[idx].astype(np.int64))


@dataclass
class TextBatches:
    """Language-model batches: random windows (x, y) of ``block_size`` token ids, y shifted by one."""

    tokens: np.ndarray  # (L,) integer token ids
    batch_size: int
    block_size: int
    steps: int  # batches per epoch

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int, skip: int = 0):
        rng = _epoch_rng(seed, epoch)
        starts = rng.integers(0, len(self.tokens) - self.block_size - 1, size=(self.steps, self.batch_size))
        offsets = np.arange(self.block_size)
        for b in range(skip, self.steps):
            pos = starts[b][:, None] + offsets  # (B, T)
            x = self.tokens[pos].astype(np.int64)
            y = self.tokens[pos + 1].astype(np.int64)
            yield ember.from_numpy(x), ember.from_numpy(y)
