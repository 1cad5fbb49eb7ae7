"""``DistributedSampler``: each rank's share of a dataset, in exactly PyTorch's order.

With ``shuffle`` the permutation is PyTorch's ``torch.randperm(n, generator=g)`` for
``g.manual_seed(seed + epoch)``: a Fisher-Yates shuffle driven by MT19937's raw 32-bit outputs
(``random() % (n - i)``), which NumPy's legacy ``RandomState`` seeding reproduces bit for bit.
So an Ember job and a PyTorch job with the same seed visit the same samples on the same ranks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np

from ember.utils.data.sampler import Sampler

__all__ = ["DistributedSampler", "torch_randperm"]


def torch_randperm(n: int, seed: int) -> list[int]:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()`` on CPU.

    Example:
        >>> torch_randperm(5, 0)
        [4, 1, 2, 0, 3]
    """
    if n >= 2**32 // 20:
        raise ValueError(f"torch_randperm: n={n} is beyond the 32-bit path PyTorch uses for small n")
    if n <= 1:
        return list(range(n))
    raw = np.random.RandomState(seed & 0xFFFFFFFF)._bit_generator.random_raw(n - 1)
    z = (raw % np.arange(n, 1, -1, dtype=np.uint64)).astype(np.int64) + np.arange(n - 1)
    perm = list(range(n))
    for i, j in enumerate(z.tolist()):
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _world() -> tuple[int, int]:
    """(world size, rank) from ember.distributed when it is initialized, else torchrun's variables."""
    from ember import distributed

    if distributed.is_initialized():
        return distributed.get_world_size(), distributed.get_rank()
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


class DistributedSampler(Sampler):
    """Each of ``num_replicas`` ranks gets a disjoint, equally long share of the indices.

    The order is shuffled from ``seed + epoch`` (call ``set_epoch`` each epoch), identically on
    every rank and identically to PyTorch. Unless ``drop_last``, the list is padded by repeating
    indices from its start so it divides evenly. ``num_replicas`` and ``rank`` default to
    ember.distributed's, or to WORLD_SIZE / RANK before ``init_process_group``.

    Example:
        >>> from ember.utils.data import DistributedSampler
        >>> list(DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3, 0]
    """

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            world, my_rank = _world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = my_rank if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            # drop the tail so every rank gets the same number of samples
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        indices = torch_randperm(n, self.seed + self.epoch) if self.shuffle else list(range(n))
        if not self.drop_last:
            pad = self.total_size - len(indices)
            if pad <= len(indices):
                indices += indices[:pad]
            else:
                indices += (indices * math.ceil(pad / len(indices)))[:pad]
        else:
            indices = indices[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``__iter__`` use ``seed + epoch`` (call it at the start of every epoch)."""
        self.epoch = epoch
