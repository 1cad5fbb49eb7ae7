"""``ember.nn.parallel``: ``DistributedDataParallel`` (as ``torch.nn.parallel``)."""

from ember.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
