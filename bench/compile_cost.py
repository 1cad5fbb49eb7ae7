"""Cold and warm compile cost of each workload's whole compiled training step, in CPU seconds too.

``bench/compiled_train.py`` reports wall seconds; on a shared machine those depend on the load and
on how many compiler processes ran at once. Here each measurement is a new process that times its
first two step calls (the two step graphs: the first step's and the steady state's) less two
steady-state runs, and reports wall seconds, the process's own CPU seconds (capture, passes,
rendering, hashing) and its compiler children's CPU seconds (``RUSAGE_CHILDREN``). Cold: a new cache
folder holding only the hand kernels (built once, before timing); warm: the same folder again.

Run: ``PYTHONPATH=. python bench/compile_cost.py [--only moe-gpt] [--rounds 3]`` (medians per column).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

__all__ = ["measure", "main"]

_CHILD = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
import ember
from ember.backends import ckernels
from ember.backends.ckernels import optim
from bench import wl_train
ckernels.get()
optim._lib()
ember.set_num_threads(1)
ember.manual_seed(0)
step = getattr(wl_train, sys.argv[1].replace("-", "_")).impls["ember"](ember)
fn = ember.compile(step)

def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime

s0, c0, t0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
fn()
fn()
s1, c1, t1 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
fn()
fn()
s2, t2 = cpu(resource.RUSAGE_SELF), time.perf_counter()
print(t1 - t0 - (t2 - t1), s1 - s0 - (s2 - s1), c1 - c0)
"""


def _run(name: str, cache: str) -> tuple:
    env = dict(os.environ, EMBER_CACHE_DIR=cache, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _CHILD, name], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return tuple(float(v) for v in r.stdout.split()[-3:])


def measure(name: str, base: str) -> tuple:
    """``((wall, self cpu, compiler cpu) cold, (...) warm)`` for one workload, starting from a copy
    of the cache folder ``base`` (the hand kernels only)."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        shutil.copytree(base, cache)
        return _run(name, cache), _run(name, cache)


def main(argv=None) -> None:
    from bench.wl_train import TRAIN_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(TRAIN_NAMES))
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as base:
        env = dict(os.environ, EMBER_CACHE_DIR=base)
        prep = "from ember.backends import ckernels; from ember.backends.ckernels import optim; ckernels.get(); optim._lib()"
        subprocess.run([sys.executable, "-c", prep], env=env, check=True)
        print("| workload | cold wall s | cold self CPU s | cold compiler CPU s | warm wall s | warm self CPU s |")
        print("|---|---|---|---|---|---|")
        for name in args.only:
            runs = [measure(name, base) for _ in range(args.rounds)]
            med = [statistics.median(r[i][j] for r in runs) for i in range(2) for j in range(3)]
            print(f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
