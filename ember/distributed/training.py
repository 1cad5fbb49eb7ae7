"""Data-parallel set-up for training loops (what ``ember train --parallel dp|zero|zero2`` needs).

Example (under ``ember run -n 2``):
    >>> from ember.distributed.training import setup_data_parallel, is_main_process
    >>> model, opt, inner = setup_data_parallel(net, ember.optim.AdamW, "zero", lr=3e-4)  # doctest: +SKIP
    >>> sampler = DistributedSampler(train_set, shuffle=True, seed=0)                    # doctest: +SKIP
    >>> # each epoch: sampler.set_epoch(epoch); loss = ...; loss.backward(); opt.step()
    >>> # checkpoint: consolidate_optimizer(opt) on every rank, then on rank 0 only:
    >>> if is_main_process(): ember.save(inner.state_dict(), path)                       # doctest: +SKIP
"""

from __future__ import annotations

import ember.distributed as dist
from ember.distributed import _env

__all__ = ["init_if_launched", "is_main_process", "setup_data_parallel", "consolidate_optimizer"]


def init_if_launched(backend: str = "gloo", timeout=None) -> bool:
    """Join the process group when an MPI launcher started more than one rank; True if distributed."""
    if dist.is_initialized():
        return dist.get_world_size() > 1
    info = _env.launch_info()
    if not _env.under_mpi_launcher() or info.world_size <= 1:
        return False
    dist.init_process_group(backend, timeout=timeout)
    return True


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes checkpoints, metrics and plots."""
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_data_parallel(model, optimizer_class, parallel: str = "dp", bucket_cap_mb: float = 25, **optimizer_kwargs):
    """``(model_to_train, optimizer, unwrapped_model)`` for ``parallel`` in dp | zero | zero2.

    dp: DistributedDataParallel + the optimizer; zero: DDP + ZeroRedundancyOptimizer (ZeRO-1);
    zero2: ZeroRedundancyOptimizer(stage=2) alone (it averages the gradients itself). Without a
    process group of more than one rank it returns the model and a plain optimizer.
    """
    if parallel not in ("dp", "zero", "zero2"):
        raise ValueError(f"setup_data_parallel: parallel must be dp, zero or zero2, got {parallel!r}")
    if not init_if_launched():
        return model, optimizer_class(model.parameters(), **optimizer_kwargs), model
    from ember.distributed.optim import ZeroRedundancyOptimizer
    from ember.nn.parallel import DistributedDataParallel

    if parallel == "zero2":
        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class, stage=2, **optimizer_kwargs), model
    ddp = DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    if parallel == "dp":
        return ddp, optimizer_class(ddp.parameters(), **optimizer_kwargs), model
    return ddp, ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class, **optimizer_kwargs), model


def consolidate_optimizer(optimizer):
    """The whole optimizer state_dict on rank 0 (call on every rank; None elsewhere)."""
    from ember.distributed.optim import ZeroRedundancyOptimizer

    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer.consolidate_state_dict(to=0)
        return optimizer.state_dict() if is_main_process() else None
    return optimizer.state_dict() if is_main_process() else None
