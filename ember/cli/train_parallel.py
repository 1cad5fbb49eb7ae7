"""``ember train --nproc N --parallel dp|zero|zero2``: the main job, data-parallel over N ranks.

``--nproc N`` alone relaunches the same command under ``ember run -n N`` (MPICH's launcher); a
command already started by a launcher (``ember run -n N -m ember.cli.main train ...`` or a bare
``mpiexec``) joins the job it is in. Every rank builds the same model, data order and recipe;
each global batch is cut into equal contiguous shares, one per rank, so N ranks take the same
optimizer steps as one process on the whole batch:

- ``dp``: ``DistributedDataParallel`` averages the gradients (bucketed, overlapped with backward);
- ``zero``: DDP plus ``ZeroRedundancyOptimizer`` (ZeRO-1: each rank keeps a share of the state);
- ``zero2``: ``ZeroRedundancyOptimizer(stage=2)`` (gradients reduce-scattered, shards updated).

Rank 0 alone writes the checkpoint (the plain module's weights and the whole optimizer state, so
it resumes in a single process too), ``metrics.json`` and the curves.

Example:
    $ ember train --model mlp --epochs 2 --nproc 2 --parallel zero
"""

from __future__ import annotations

import numpy as np

import ember

__all__ = ["PARALLEL_MODES", "relaunch_argv", "RankSync", "trainer_options"]

PARALLEL_MODES = ("dp", "zero", "zero2")


def relaunch_argv(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N``: what each rank runs under the launcher."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


class RankSync:
    """This rank's share of a batch, and sums of per-step figures over the ranks."""

    def __init__(self):
        import ember.distributed as dist

        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def shard(self, x, y):
        """Rows ``[r*n/W, (r+1)*n/W)`` of the batch (``x``, ``y``) for rank r of W."""
        n = len(y)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return x[lo:hi], y[lo:hi]

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (one small all-reduce)."""
        t = ember.tensor(np.asarray(values, dtype=np.float64))
        self._dist.all_reduce(t)
        return [float(v) for v in t.tolist()]


def trainer_options(parallel: str) -> dict:
    """The :class:`~ember.cli.trainer.Trainer` options of a data-parallel rank, or ``{}`` when this
    process is not part of a job of several ranks."""
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"--parallel must be one of {', '.join(PARALLEL_MODES)}, got {parallel!r}")
    from ember.distributed.training import init_if_launched, is_main_process

    if not init_if_launched():
        return {}
    from ember.distributed.optim import ZeroRedundancyOptimizer
    from ember.nn.parallel import DistributedDataParallel

    def wrap_optimizer(opt):
        groups = [dict(g) for g in opt.param_groups]
        return ZeroRedundancyOptimizer(groups, type(opt), stage=2 if parallel == "zero2" else 1, **opt.defaults)

    return {
        # zero2 reduce-scatters the gradients itself: no DDP all-reduce on top of it.
        "wrap_model": None if parallel == "zero2" else DistributedDataParallel,
        "wrap_optimizer": None if parallel == "dp" else wrap_optimizer,
        "is_writer": is_main_process(),
        "sync": RankSync(),
    }
