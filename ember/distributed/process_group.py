"""Process groups on MPI: ``init_process_group``, ranks, sub-groups and their communicators.

Every group owns an MPI communicator. ``"mpi"`` is the native backend; ``"gloo"`` is accepted and
served by the same MPI communicators on CPU, so unmodified PyTorch CPU scripts run; ``"nccl"``
needs a CUDA device and CuPy: its groups also get an NCCL communicator (``_nccl.py``) that runs
the collectives of CUDA tensors; elsewhere it is a clear error.

Example (run with ``ember run -n 2 script.py``):
    >>> import ember.distributed as dist
    >>> dist.init_process_group("gloo")           # doctest: +SKIP
    >>> dist.get_rank(), dist.get_world_size()    # doctest: +SKIP
    (0, 2)
"""

from __future__ import annotations

import datetime
import enum
import os
import sys
import traceback
import warnings

from ember.distributed import _env
from ember.distributed._mpi import mpi

__all__ = [
    "Backend",
    "ReduceOp",
    "ProcessGroup",
    "GroupMember",
    "DistError",
    "DistBackendError",
    "init_process_group",
    "destroy_process_group",
    "is_initialized",
    "is_mpi_available",
    "is_gloo_available",
    "is_nccl_available",
    "get_rank",
    "get_world_size",
    "get_backend",
    "new_group",
    "get_process_group_ranks",
    "get_global_rank",
    "get_group_rank",
    "default_pg_timeout",
]

default_pg_timeout = datetime.timedelta(minutes=30)


class DistError(RuntimeError):
    """Base class of ember.distributed's errors (as ``torch.distributed.DistError``)."""


class DistBackendError(DistError):
    """A collective failed in the communication backend (timeouts, mismatched peers)."""


class Backend(str):
    """Backend names, as ``torch.distributed.Backend``: ``Backend("GLOO") == "gloo"``."""

    MPI = "mpi"
    GLOO = "gloo"
    NCCL = "nccl"
    UNDEFINED = "undefined"

    def __new__(cls, name: str):
        value = name.lower()
        if value not in (cls.MPI, cls.GLOO, cls.NCCL):
            raise ValueError(f"Invalid backend: '{name}'")
        return str.__new__(cls, value)


class ReduceOp(enum.IntEnum):
    """Reduction operators for all_reduce, reduce and reduce_scatter."""

    SUM = 0
    AVG = 1
    PRODUCT = 2
    MIN = 3
    MAX = 4
    BAND = 5
    BOR = 6
    BXOR = 7
    PREMUL_SUM = 8

    def __repr__(self) -> str:
        return f"<RedOpType.{self.name}: {self.value}>"


ReduceOp.RedOpType = ReduceOp  # torch spells the members ReduceOp.RedOpType.SUM too


class ProcessGroup:
    """A set of ranks with its own MPI communicator (``comm`` is None on non-members).

    ``ranks`` are global ranks in group-rank order; ``timeout`` (seconds) bounds every collective.
    """

    def __init__(self, comm, ranks: list[int], backend: str, timeout: float, name: str = ""):
        self.comm = comm
        # Metadata checks run on their own communicator so they can be posted at once, in program order.
        self.meta_comm = comm.Dup() if comm is not None else None
        self.ranks = list(ranks)
        self.backend = backend
        self.timeout = timeout
        self.group_name = name
        self._global_to_group = {g: i for i, g in enumerate(self.ranks)}
        self.nccl = None  # NCCL communicator (backend "nccl" on a GPU): CUDA tensors' collectives

    def rank(self) -> int:
        return self.comm.Get_rank() if self.comm is not None else -1

    def size(self) -> int:
        return len(self.ranks)

    def is_member(self) -> bool:
        return self.comm is not None

    def group_rank(self, global_rank: int, what: str = "rank") -> int:
        r = self._global_to_group.get(global_rank)
        if r is None:
            raise ValueError(f"Global rank {global_rank} is not part of group {self.ranks} ({what})")
        return r

    def free(self) -> None:
        for c in (self.comm, self.meta_comm):
            if c is not None:
                c.Free()
        self.comm = self.meta_comm = None

    def __repr__(self) -> str:
        return f"ProcessGroup(backend={self.backend!r}, ranks={self.ranks})"


class GroupMember:
    """``GroupMember.WORLD`` is the default group; ``NON_GROUP_MEMBER`` what non-members get."""

    WORLD: ProcessGroup | None = None
    NON_GROUP_MEMBER = None


class _State:
    world: ProcessGroup | None = None
    groups: list = []
    excepthook_installed = False


_state = _State()

_NOT_INIT = "Default process group has not been initialized, please make sure to call init_process_group."


def _world() -> ProcessGroup:
    if _state.world is None:
        raise ValueError(_NOT_INIT)
    return _state.world


def _resolve(group) -> ProcessGroup:
    """``group`` or the default group; raises PyTorch's error before init."""
    if group is None:
        return _world()
    if _state.world is None:
        raise ValueError(_NOT_INIT)
    return group


def _seconds(timeout) -> float:
    if timeout is None:
        return default_pg_timeout.total_seconds()
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def is_mpi_available() -> bool:
    from ember.distributed._mpi import is_available

    return is_available()


def is_gloo_available() -> bool:
    """gloo is served by MPI, so it is available whenever MPI is."""
    return is_mpi_available()


def is_nccl_available() -> bool:
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:
        return False
    return True


def is_initialized() -> bool:
    """True after ``init_process_group`` and before ``destroy_process_group``."""
    return _state.world is not None


def _abort_on_uncaught(exc_type, exc, tb) -> None:
    """Print the failing rank's traceback, then end the whole job (no peer waits forever)."""
    rank = _state.world.rank() if _state.world is not None else -1
    sys.stderr.write(f"[rank {rank}] " + "".join(traceback.format_exception(exc_type, exc, tb)))
    sys.stderr.write(f"ember.distributed: rank {rank} failed with {exc_type.__name__}: {exc}; aborting the job\n")
    sys.stderr.flush()
    if exc_type is KeyboardInterrupt:
        os._exit(130)
    try:
        mpi().COMM_WORLD.Abort(1)
    finally:
        os._exit(1)


def init_process_group(
    backend: str | None = None,
    init_method: str | None = None,
    timeout: datetime.timedelta | None = None,
    world_size: int = -1,
    rank: int = -1,
    store=None,
    group_name: str = "",
    pg_options=None,
    device_id=None,
) -> None:
    """Join the job's default process group (all ranks started by ``ember run`` or ``mpiexec``).

    Args:
        backend: ``"mpi"`` (native), ``"gloo"`` (served by MPI on CPU) or ``"nccl"`` (GPUs only);
            ``None`` picks ``"mpi"``.
        init_method: accepted for compatibility (``"env://"``); MPI's launcher wires the ranks.
        timeout: how long any collective may wait for its peers before raising
            ``DistBackendError`` (default 30 minutes, as PyTorch).
        world_size, rank: when given, must agree with the launcher's.

    Example:
        >>> import ember.distributed as dist
        >>> dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # doctest: +SKIP
    """
    if _state.world is not None:
        raise ValueError("trying to initialize the default process group twice!")
    name = Backend(backend) if backend is not None else Backend.MPI
    if name == Backend.NCCL and not _cuda_present():
        raise RuntimeError(
            "ember.distributed: backend 'nccl' needs a CUDA GPU and CuPy's NCCL, and none is available here; "
            "use backend='gloo' or 'mpi' on CPU"
        )
    info = _env.launch_info()
    env_size = int(os.environ.get("WORLD_SIZE", "-1") or -1)
    if not _env.under_mpi_launcher() and max(world_size, env_size) > 1:
        raise RuntimeError(
            f"ember.distributed: world_size {max(world_size, env_size)} was asked for, but this process was not "
            "started by an MPI launcher; start the ranks with `ember run -n N script.py` or `mpiexec -n N python script.py`"
        )
    MPI = mpi()
    comm = MPI.COMM_WORLD.Dup()
    size, me = comm.Get_size(), comm.Get_rank()
    if info.world_size > 0 and _env.under_mpi_launcher() and info.world_size != size:
        raise RuntimeError(f"ember.distributed: the launcher says {info.world_size} ranks but MPI has {size}")
    if world_size not in (-1, size) or rank not in (-1, me):
        raise ValueError(
            f"init_process_group: world_size={world_size}, rank={rank} disagree with the MPI job (size {size}, rank {me})"
        )
    world = ProcessGroup(comm, list(range(size)), str(name), _seconds(timeout), group_name or "default_pg")
    if name == Backend.NCCL:
        from ember.distributed._nccl import NcclComm

        world.nccl = NcclComm(world)
    _state.world = world
    _state.groups = [world]
    GroupMember.WORLD = world
    if not _state.excepthook_installed and size > 1:
        _state.excepthook_installed = True
        sys.excepthook = _abort_on_uncaught


def _cuda_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0 and is_nccl_available()
    except Exception:
        return False


def destroy_process_group(group: ProcessGroup | None = None) -> None:
    """Free ``group``'s communicator, or every group's (and end the default group) when None."""
    if group is None or group is _state.world:
        if _state.world is None:
            raise AssertionError("Process group cannot be None")
        for g in _state.groups:
            g.free()
        _state.groups = []
        _state.world = None
        GroupMember.WORLD = None
        return
    group.free()
    if group in _state.groups:
        _state.groups.remove(group)


def get_rank(group: ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (default: the world); -1 if it is not a member."""
    return _resolve(group).rank()


def get_world_size(group: ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (default: the world); -1 if this process is not a member."""
    g = _resolve(group)
    return g.size() if g.is_member() else -1


def get_backend(group: ProcessGroup | None = None) -> str:
    return _resolve(group).backend


def new_group(
    ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False, group_desc=None
):
    """A group of the given global ranks (all ranks of the world must call this, in the same order).

    Example:
        >>> evens = dist.new_group([0, 2])  # doctest: +SKIP
    """
    world = _world()
    ranks = sorted(range(world.size()) if ranks is None else {int(r) for r in ranks})
    for r in ranks:
        if r < 0 or r >= world.size():
            raise ValueError(f"The new group's rank should be within the world_size set by init_process_group ({r})")
    me = world.rank()
    MPI = mpi()
    color = 0 if me in ranks else MPI.UNDEFINED
    comm = world.comm.Split(color, key=me)
    if comm == MPI.COMM_NULL:
        comm = None
    t = _seconds(timeout) if timeout is not None else world.timeout
    g = ProcessGroup(comm, ranks, str(Backend(backend)) if backend else world.backend, t, group_desc or "")
    if g.backend == Backend.NCCL and comm is not None:
        if not _cuda_present():
            raise RuntimeError("ember.distributed: new_group(backend='nccl') needs a CUDA GPU and CuPy's NCCL")
        from ember.distributed._nccl import NcclComm

        g.nccl = NcclComm(g)
    _state.groups.append(g)
    return g


def get_process_group_ranks(group: ProcessGroup) -> list[int]:
    return list(_resolve(group).ranks)


def get_global_rank(group: ProcessGroup, group_rank: int) -> int:
    g = _resolve(group)
    if not 0 <= group_rank < g.size():
        raise ValueError(f"Group rank {group_rank} is not part of group {g.ranks}")
    return g.ranks[group_rank]


def get_group_rank(group: ProcessGroup, global_rank: int) -> int:
    return _resolve(group).group_rank(global_rank)


def _warn_not_in_group(op: str) -> None:
    warnings.warn(
        f"Running {op} on global rank {_world().rank()} which does not belong to the given group.", stacklevel=3
    )
