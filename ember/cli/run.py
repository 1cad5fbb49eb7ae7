"""``ember run -n N [--hosts a,b | --hostfile F] script.py [args] | -m module [args]``.

Starts N ranks through MPICH's launcher (``mpiexec``, Hydra), each running
``python -m ember.distributed.run`` (torchrun's variables, then the script). While the job runs
the launcher watches the local ranks' processes (pidfds): when one ends without finishing (an
exception, a signal such as SIGKILL, ``os._exit``), it stops the rest at once (Hydra does it for
ranks on other hosts) and this command exits non-zero with a message naming the rank and cause.

Example:
    $ ember run -n 2 train_ddp.py --epochs 1
    $ ember run -n 8 --hostfile hosts.txt -m mypkg.train
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

__all__ = ["add_parser", "main", "find_mpiexec", "build_command"]


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="start N ranks of a script with MPI (like torchrun): ember run -n 2 script.py")
    p.add_argument("-n", "--nproc", "--nproc-per-node", dest="nproc", type=int, required=True, help="number of ranks")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--hosts", default=None, help="comma-separated host names (ranks fill them in order)")
    where.add_argument("--hostfile", default=None, help="MPICH host file: one 'host[:slots]' a line")
    p.add_argument("--mpiexec", default=None, help="launcher to use (default: the mpich wheel's mpiexec)")
    p.add_argument("--master-port", type=int, default=29500, help="MASTER_PORT given to the ranks")
    p.add_argument("-m", dest="module", default=None, help="run a module as a script (python -m)")
    p.add_argument("script", nargs=argparse.REMAINDER, help="script.py and its arguments")


def find_mpiexec() -> str:
    """The mpich wheel's mpiexec (next to this Python), else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(here):
        return here
    found = shutil.which("mpiexec")
    if found is None:
        raise SystemExit(
            "ember run: no mpiexec found; install the MPI extra: pip install 'ember[dist]' (mpi4py, mpich)"
        )
    return found


def build_command(args, status_dir: str) -> list[str]:
    if args.module is None and not args.script:
        raise SystemExit("ember run: give a script (ember run -n 2 script.py) or a module (-m pkg.mod)")
    target = ["-m", args.module, *args.script] if args.module else list(args.script)
    cmd = [args.mpiexec or find_mpiexec(), "-n", str(args.nproc)]
    master = "127.0.0.1"
    if args.hosts:
        cmd += ["-hosts", args.hosts]
        master = args.hosts.split(",")[0].split(":")[0]
    elif args.hostfile:
        cmd += ["-f", args.hostfile]
        master = _first_host(args.hostfile) or master
    else:
        # All ranks are local: the launcher watches them and ends the job itself when one dies,
        # which tells the first failure apart from the ranks stopped because of it.
        cmd += ["-disable-auto-cleanup"]
    cmd += ["-genv", "EMBER_RUN_STATUS", status_dir, "-genv", "MASTER_ADDR", master]
    cmd += ["-genv", "MASTER_PORT", str(args.master_port)]
    return [*cmd, sys.executable, "-m", "ember.distributed.run", *target]


def _first_host(path: str) -> str | None:
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                return line.split(":")[0].split()[0]
    return None


class _Watcher:
    """Follows the local ranks' processes (pidfds) to learn which one ended first, and how."""

    def __init__(self, status_dir: str):
        self.dir = status_dir
        self.fds: dict[int, tuple[int, int]] = {}  # fd -> (rank, pid)
        self.seen: set[int] = set()
        self.first: tuple[int, int] | None = None  # (rank, pid) of the first rank that ended unfinished
        self.poller = select.poll()

    def _status(self, rank: int, kind: str) -> str | None:
        try:
            with open(os.path.join(self.dir, f"rank{rank}.{kind}")) as f:
                return f.read()
        except OSError:
            return None

    def scan(self) -> None:
        for name in os.listdir(self.dir):
            if not name.endswith(".start"):
                continue
            rank = int(name[4:-6])
            if rank in self.seen:
                continue
            pid_text = self._status(rank, "start")
            if not pid_text:
                continue
            self.seen.add(rank)
            pid = int(pid_text)
            if not self._ours(pid):
                continue  # a rank on another host
            try:
                fd = os.pidfd_open(pid)
            except (OSError, AttributeError):
                continue
            self.fds[fd] = (rank, pid)
            self.poller.register(fd, select.POLLIN)

    def _ours(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"EMBER_RUN_STATUS={self.dir}".encode() in f.read()
        except OSError:
            return False

    def poll(self, timeout_ms: int) -> None:
        for fd, _ in self.poller.poll(timeout_ms):
            rank, pid = self.fds.pop(fd)
            self.poller.unregister(fd)
            os.close(fd)
            if self.first is None and self._status(rank, "done") is None:
                self.first = (rank, pid)
                self.kill_all()  # end the job now, so the ranks that die next are not taken for the cause

    def kill_all(self) -> None:
        for fd in list(self.fds):
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        self.kill_all()  # nothing of the job outlives the launcher
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def report(self, nproc: int, rc: int) -> str | None:
        """The message naming the failed rank and cause, or None when every rank finished."""
        fails = {r: self._status(r, "fail") for r in range(nproc)}
        fails = {r: c for r, c in fails.items() if c is not None}
        unfinished = [r for r in range(nproc) if self._status(r, "done") is None]
        if not fails and not unfinished and rc == 0:
            return None
        if self.first is not None and self.first[0] not in fails:
            rank, pid = self.first
            return (
                f"ember run: rank {rank} (pid {pid}) died without finishing its script: killed by a signal "
                "or ended by os._exit; the other ranks were stopped"
            )
        if fails:
            rank = min(fails) if self.first is None else self.first[0]
            rank = rank if rank in fails else min(fails)
            return f"ember run: rank {rank} failed: {fails[rank]}; the other ranks were stopped"
        if unfinished:
            return f"ember run: ranks {unfinished} did not finish (mpiexec exit status {rc})"
        return f"ember run: mpiexec exited with status {rc}"


def main(args) -> int:
    if args.nproc < 1:
        raise SystemExit("ember run: -n must be at least 1")
    status_dir = tempfile.mkdtemp(prefix="ember-run-")
    cmd = build_command(args, status_dir)
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    watcher = _Watcher(status_dir)

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None:
            watcher.scan()
            watcher.poll(20)
        watcher.scan()
        watcher.poll(0)
        rc = proc.returncode
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        watcher.close()
    message = watcher.report(args.nproc, rc)
    shutil.rmtree(status_dir, ignore_errors=True)
    if message is None:
        return 0
    sys.stderr.write(message + "\n")
    return 1
