"""Where this process sits in the job, read from the launcher's environment.

MPI launchers describe each process through their own variables: MPICH's Hydra sets ``PMI_RANK``,
``PMI_SIZE``, ``MPI_LOCALRANKID`` and ``MPI_LOCALNRANKS``; Open MPI sets ``OMPI_COMM_WORLD_*``;
SLURM's ``srun --mpi=pmi2`` sets ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``.
torchrun-style ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` are set by ``ember run`` from these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LaunchInfo", "launch_info", "under_mpi_launcher"]

_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


@dataclass
class LaunchInfo:
    """rank, world size, local rank and local world size of this process (-1: unknown)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def _first_int(names, env) -> int:
    for n in names:
        v = env.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                continue
    return -1


def under_mpi_launcher(env=None) -> bool:
    """True when an MPI launcher (mpiexec, srun) started this process."""
    env = os.environ if env is None else env
    return _first_int(_RANK_VARS, env) >= 0 or "PMI_FD" in env or "PMI_PORT" in env


def launch_info(env=None) -> LaunchInfo:
    """This process's place in the job from the MPI launcher's variables (or a single process)."""
    env = os.environ if env is None else env
    rank = _first_int(_RANK_VARS, env)
    size = _first_int(_SIZE_VARS, env)
    if rank < 0:
        return LaunchInfo(0, 1, 0, 1)
    local_rank = _first_int(_LOCAL_RANK_VARS, env)
    local_size = _first_int(_LOCAL_SIZE_VARS, env)
    if local_size < 0 and "SLURM_TASKS_PER_NODE" in env:
        try:
            local_size = int(env["SLURM_TASKS_PER_NODE"].split("(")[0].split(",")[0])
        except ValueError:
            local_size = -1
    return LaunchInfo(rank, size, local_rank if local_rank >= 0 else rank, local_size if local_size > 0 else size)
