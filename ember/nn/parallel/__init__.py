"""``ember.nn.parallel``: ``DistributedDataParallel`` (as ``torch.nn.parallel``)."""

from ember.nn.parallel.distributed import DistributedDataParallel, average_gradients

__all__ = ["DistributedDataParallel", "average_gradients"]
