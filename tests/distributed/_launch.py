"""Start real ranks for a test: ``ember run``, bare ``mpiexec`` or ``ember train --nproc``, under a
timeout, leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"

mpi4py = pytest.importorskip("mpi4py", reason="ember.distributed tests need mpi4py (pip install 'ember[dist]')")
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def run_job(cmd: list[str], timeout: float, env=None) -> tuple[int, str, float]:
    """Run ``cmd`` (a launcher and its ranks) in its own session; ``(returncode, output, seconds)``.

    Past ``timeout`` the whole session is stopped (SIGTERM, which mpiexec and ``ember run`` pass
    to their ranks, then SIGKILL) and the test fails; in every case nothing of it outlives the call.
    """
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.update(env or {})
    t0 = time.monotonic()
    # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    p = subprocess.Popen(
        cmd, env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        time.sleep(1)
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{out}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # nothing of the job may outlive the test
        except ProcessLookupError:
            pass
    return p.returncode, out, time.monotonic() - t0


def launch(script: str, *args: str, n: int = 2, timeout: float = 60, bare: bool = False, env=None):
    """Run ``scripts/<script>`` on ``n`` ranks; returns (returncode, output, seconds)."""
    path = str(SCRIPTS / script)
    if bare:
        cmd = [str(MPIEXEC), "-n", str(n), sys.executable, path, *args]
    else:
        cmd = [sys.executable, "-m", "ember.cli.main", "run", "-n", str(n), path, *args]
    return run_job(cmd, timeout, env)


def ember_train(*args: str, timeout: float = 180) -> tuple[int, str]:
    """``ember train --quiet *args`` (with ``--nproc N`` it relaunches itself on N ranks)."""
    rc, out, _ = run_job([sys.executable, "-m", "ember.cli.main", "train", "--quiet", *args], timeout)
    return rc, out
