"""``ember.distributed``: PyTorch's ``torch.distributed`` on MPI (mpi4py with MPICH).

Start the ranks with ``ember run -n N script.py`` (or ``mpiexec -n N python script.py``, or
``srun --mpi=pmi2``), then call ``init_process_group``. Backends: ``"mpi"`` (native), ``"gloo"``
(accepted and served by MPI on CPU, so PyTorch CPU scripts run unchanged) and ``"nccl"`` (GPUs).
Importing this package does not import mpi4py; using it without mpi4py raises an error that
says what to install (``pip install 'ember[dist]'``).

Example (``ember run -n 2 demo.py``):
    >>> import ember as torch
    >>> import ember.distributed as dist
    >>> dist.init_process_group("gloo")                          # doctest: +SKIP
    >>> t = torch.ones(2) * (dist.get_rank() + 1)                 # doctest: +SKIP
    >>> dist.all_reduce(t, op=dist.ReduceOp.SUM)                  # doctest: +SKIP
"""

from ember.distributed._mpi import is_available
from ember.distributed.collectives import (
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_to_all,
    all_to_all_single,
    barrier,
    broadcast,
    gather,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    scatter,
)
from ember.distributed.objects import all_gather_object, broadcast_object_list, gather_object
from ember.distributed.p2p import P2POp, batch_isend_irecv, irecv, isend, recv, send
from ember.distributed.process_group import (
    Backend,
    DistBackendError,
    DistError,
    GroupMember,
    ProcessGroup,
    ReduceOp,
    default_pg_timeout,
    destroy_process_group,
    get_backend,
    get_global_rank,
    get_group_rank,
    get_process_group_ranks,
    get_rank,
    get_world_size,
    init_process_group,
    is_gloo_available,
    is_initialized,
    is_mpi_available,
    is_nccl_available,
    new_group,
)
from ember.distributed.work import Work

group = GroupMember  # torch.distributed.group.WORLD

__all__ = [
    "Backend",
    "DistBackendError",
    "DistError",
    "GroupMember",
    "P2POp",
    "ProcessGroup",
    "ReduceOp",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "batch_isend_irecv",
    "broadcast",
    "broadcast_object_list",
    "default_pg_timeout",
    "destroy_process_group",
    "gather",
    "gather_object",
    "get_backend",
    "get_global_rank",
    "get_group_rank",
    "get_process_group_ranks",
    "get_rank",
    "get_world_size",
    "group",
    "init_process_group",
    "irecv",
    "is_available",
    "is_gloo_available",
    "is_initialized",
    "is_mpi_available",
    "is_nccl_available",
    "isend",
    "new_group",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "send",
]
