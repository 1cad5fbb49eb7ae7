"""Per-rank bootstrap of ``ember run``: torchrun's environment, then the user's script.

``ember run -n N script.py`` starts ``mpiexec -n N python -m ember.distributed.run script.py``.
Here each rank turns the MPI launcher's variables into ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE`` (and ``OMP_NUM_THREADS`` = cores / local ranks unless set), runs the script
as ``__main__``, and reports how it ended in the launcher's status folder: a rank that raises
prints its traceback, records the cause, and exits at once without MPI's finalize, so the
launcher ends the other ranks instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback

__all__ = ["main", "set_rank_env"]


def set_rank_env(env=None) -> int:
    """Set torchrun's variables from the MPI launcher's; returns the rank."""
    from ember.distributed._env import launch_info

    env = os.environ if env is None else env
    info = launch_info(env)
    env["RANK"] = str(info.rank)
    env["WORLD_SIZE"] = str(info.world_size)
    env["LOCAL_RANK"] = str(info.local_rank)
    env["LOCAL_WORLD_SIZE"] = str(info.local_world_size)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, info.local_world_size)))
    return info.rank


def _status(rank: int, kind: str, text: str = "") -> None:
    folder = os.environ.get("EMBER_RUN_STATUS")
    if not folder:
        return
    path = os.path.join(folder, f"rank{rank}.{kind}")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m ember.distributed.run script.py [args] | -m module [args]")
    rank = set_rank_env()
    _status(rank, "start", str(os.getpid()))
    if argv[0] == "-m":
        target, args, run = argv[1], argv[2:], runpy.run_module
    else:
        target, args, run = argv[0], argv[1:], runpy.run_path
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
    sys.argv = [target, *args]
    code = 0
    try:
        if run is runpy.run_module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            _fail(rank, f"exited with status {code}", code)
    except BaseException as e:  # the script failed: say which rank and why, then end the job
        sys.stderr.write(f"[rank {rank}] " + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        _fail(rank, f"{type(e).__name__}: {e}", 1)
    _status(rank, "done")
    sys.exit(code)


def _fail(rank: int, cause: str, code: int) -> None:
    _status(rank, "fail", cause)
    if not os.environ.get("EMBER_RUN_STATUS"):  # under ember run, the launcher reports it
        sys.stderr.write(f"ember.distributed: rank {rank} failed: {cause}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # Skip MPI_Finalize (it would wait for peers that are blocked in a collective); the launcher
    # sees a rank exit without finalizing and ends the others.
    os._exit(code or 1)


if __name__ == "__main__":
    main()
