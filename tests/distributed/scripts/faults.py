"""Fault scenarios, one per argv[1], for tests/distributed/test_faults.py."""

import datetime
import os
import signal
import sys
import time

import ember
import ember.distributed as dist

mode = sys.argv[1]
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=float(os.environ.get("T", "30"))))
r = dist.get_rank()
dist.barrier()

if mode == "env":
    keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"]
    print("ENV " + " ".join(f"{k}={os.environ.get(k)}" for k in keys), flush=True)
elif mode == "mismatch":
    # rank 1 passes a different shape: every rank raises the same error, and the group stays usable
    t = ember.ones(4 if r == 1 else 3)
    try:
        dist.all_reduce(t)
    except RuntimeError as e:
        print(f"MISMATCH rank {r}: {e}", flush=True)
    t = ember.ones(2)
    dist.all_reduce(t)
    assert t.tolist() == [dist.get_world_size()] * 2
    print(f"RECOVERED rank {r}", flush=True)
elif mode == "timeout":
    # rank 1 never joins: rank 0's all_reduce raises when the group's timeout passes
    if r == 0:
        t0 = time.monotonic()
        try:
            dist.all_reduce(ember.ones(2))
        except dist.DistBackendError:
            print(f"TIMEOUT after {time.monotonic() - t0:.1f}s", flush=True)
            raise
    else:
        time.sleep(60)
elif r == 1:
    time.sleep(0.2)
    if mode == "exception":
        raise ValueError("boom on purpose")
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit0":
        os._exit(0)
    if mode == "exit3":
        os._exit(3)
else:
    dist.all_reduce(ember.ones(2))  # blocks: its peer is gone
    time.sleep(60)
dist.destroy_process_group()
