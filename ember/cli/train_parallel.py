"""``ember train --nproc N --parallel dp|zero|zero2|tp|pp|ep``: the main job over N ranks.

``--nproc N`` alone relaunches the same command under ``ember run -n N`` (MPICH's launcher); a
command already started by a launcher (``ember run -n N -m ember.cli.main train ...`` or a bare
``mpiexec``) joins the job it is in. Every rank builds the same model, data order and recipe;
each global batch is cut into equal contiguous shares, one per rank, so N ranks take the same
optimizer steps as one process on the whole batch:

- ``dp``: ``DistributedDataParallel`` averages the gradients (bucketed, overlapped with backward);
- ``zero``: DDP plus ``ZeroRedundancyOptimizer`` (ZeRO-1: each rank keeps a share of the state);
- ``zero2``: ``ZeroRedundancyOptimizer(stage=2)`` (gradients reduce-scattered, shards updated).
- ``tp``, ``pp``, ``ep``: the model itself split over the ranks (tensor, pipeline or expert
  parallel), see ``ember/cli/train_sharded.py``; its checkpoint is the unsplit model's.

Rank 0 alone writes the checkpoint (the plain module's weights and the whole optimizer state, so
it resumes in a single process too), ``metrics.json`` and the curves.

Example:
    $ ember train --model mlp --epochs 2 --nproc 2 --parallel zero
"""

from __future__ import annotations

import numpy as np

import ember

__all__ = ["PARALLEL_MODES", "relaunch_argv", "mode_problem", "RankSync", "trainer_options"]

PARALLEL_MODES = ("dp", "zero", "zero2", "tp", "pp", "ep")


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


def mode_problem(args) -> str | None:
    """Why ``--parallel`` cannot split ``--model`` (None when it can, or when only a checkpoint knows)."""
    from ember.cli.train_sharded import SHARDED_MODES

    if args.parallel not in SHARDED_MODES or (args.model is None and args.resume):
        return None
    from ember.cli.train import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    if model not in SHARDED_MODES[args.parallel]:
        return f"--parallel {args.parallel} applies to {' and '.join(SHARDED_MODES[args.parallel])}, not '{model}'"
    return None


class RankSync:
    """This rank's share of a batch, and sums of per-step figures over the ranks.

    ``shard_train`` / ``shard_eval`` False: every rank takes whole batches (tensor and pipeline
    parallel runs, where the ranks share the work on one batch), and the sums count each rank.
    """

    def __init__(self, shard_train: bool = True, shard_eval: bool = True):
        import ember.distributed as dist

        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.shard_train, self.shard_eval = shard_train, shard_eval

    def shard(self, x, y, train: bool = True):
        """Rows ``[r*n/W, (r+1)*n/W)`` of the batch (``x``, ``y``) for rank r of W."""
        if not (self.shard_train if train else self.shard_eval):
            return x, y
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
    if parallel in ("tp", "pp", "ep"):
        from ember.cli.train_sharded import make_run

        return {
            "parallel": lambda recipe: make_run(parallel, recipe),
            "is_writer": is_main_process(),
            # ep splits each batch as dp does; every rank evaluates the gathered, unsplit model
            "sync": RankSync(shard_train=parallel == "ep", shard_eval=False),
        }
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
