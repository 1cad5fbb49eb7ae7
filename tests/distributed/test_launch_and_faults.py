"""`ember run`, bare mpiexec, init errors and faults, with real ranks under a timeout."""

import re

import pytest

import ember
import ember.distributed as dist
from tests.distributed._launch import launch


def test_collective_before_init_raises_pytorch_error():
    assert not dist.is_initialized()
    for fn in (lambda: dist.all_reduce(ember.ones(2)), dist.get_rank, dist.get_world_size, dist.barrier):
        with pytest.raises(ValueError, match="Default process group has not been initialized"):
            fn()


def test_nccl_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="nccl.*needs a CUDA GPU"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_nccl_code_path_against_a_cupy_stand_in():
    # No GPU here: a stand-in for cupy.cuda.nccl records the communicator set-up (unique id over
    # MPI) and each collective's call; ember itself imports and runs without CuPy.
    import sys

    from tests.distributed._launch import SCRIPTS, run_job

    rc, out, _ = run_job([sys.executable, str(SCRIPTS / "nccl_fake.py")], timeout=60)
    assert rc == 0 and "OK nccl through cupy (stand-in)" in out, out


def test_unknown_backend():
    with pytest.raises(ValueError, match="Invalid backend"):
        dist.init_process_group("carrier-pigeon")


@pytest.mark.parametrize("n", [2, 4])
def test_collectives_all_ranks(n):
    rc, out, _ = launch("collectives.py", n=n)
    assert rc == 0, out
    assert len(re.findall(r"rank \d+: \d+ checks passed", out)) == n, out


def test_bare_mpiexec_and_torchrun_env():
    rc, out, _ = launch("faults.py", "env", bare=True)
    assert rc == 0, out
    rc, out, _ = launch("faults.py", "env", env={"OMP_NUM_THREADS": ""})
    assert rc == 0, out
    # The ranks share one pipe: under load a line may lose its newline, so split on the marker.
    lines = sorted("ENV RANK=" + part for part in out.split("ENV RANK=")[1:])
    assert len(lines) == 2, out
    for r, line in enumerate(lines):
        assert (
            f"RANK={r} WORLD_SIZE=2 LOCAL_RANK={r} LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500" in line
        )


@pytest.mark.parametrize(
    "mode, cause",
    [
        ("exception", r"rank 1 failed: ValueError: boom on purpose"),
        ("sigkill", r"rank 1 \(pid \d+\) died without finishing"),
        ("exit0", r"rank 1 \(pid \d+\) died without finishing"),
        ("exit3", r"rank 1 \(pid \d+\) died without finishing"),
    ],
)
def test_dead_rank_ends_the_job(mode, cause):
    rc, out, secs = launch("faults.py", mode, timeout=30)
    assert rc != 0, out
    assert re.search(cause, out), out
    assert secs < 5 + 2, f"took {secs:.1f} s (5 s budget after startup)"


def test_exception_under_bare_mpiexec_aborts():
    rc, out, secs = launch("faults.py", "exception", bare=True, timeout=30)
    assert rc != 0 and "rank 1 failed with ValueError: boom on purpose" in out, out


def test_mismatched_shapes_raise_on_every_rank():
    rc, out, _ = launch("faults.py", "mismatch")
    assert rc == 0, out
    assert out.count("mismatched tensor sizes (element counts) across ranks (rank 0: 3, rank 1: 4)") == 2, out
    assert out.count("RECOVERED") == 2


def test_collective_timeout_raises():
    rc, out, secs = launch("faults.py", "timeout", env={"T": "2"}, timeout=40)
    assert "TIMEOUT after 2." in out, out
    assert rc != 0 and "rank 0 failed: DistBackendError" in out and "timed out after 2 s" in out, out


def test_ember_imports_without_mpi4py_and_says_what_to_install():
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import ember, ember.distributed as dist\n"
        "from ember.nn.parallel import DistributedDataParallel\n"
        "assert not dist.is_available()\n"
        "try:\n    dist.init_process_group('gloo')\n"
        "except RuntimeError as e:\n    print('ERR', e)\n"
    )
    from tests.distributed._launch import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR ember.distributed runs on MPI" in out.stdout and "pip install 'ember[dist]'" in out.stdout


def test_hostfile_launch(tmp_path):
    import os
    import subprocess
    import sys

    from tests.distributed._launch import ROOT, SCRIPTS

    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:2\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "ember.cli.main",
        "run",
        "-n",
        "2",
        "--hostfile",
        str(hosts),
        str(SCRIPTS / "faults.py"),
        "env",
    ]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("MASTER_ADDR=localhost") == 2, out.stdout
