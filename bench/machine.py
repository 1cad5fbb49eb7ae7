"""What the benchmark ran on: CPU, cores, load, library versions, BLAS and its thread limits."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "none of avx2/fma/avx512f"
    except OSError:
        pass
    return "unknown"


def blas_info() -> list[str]:
    """NumPy's BLAS as built, and what threadpoolctl sees loaded (kernel architecture, threads)."""
    import numpy as np

    lines = []
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        lines.append(f"numpy BLAS (build): {blas.get('name')} {blas.get('version')}")
    except (AttributeError, KeyError, TypeError):
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        lines.append("threadpoolctl not installed: loaded BLAS kernel not reported (pip install threadpoolctl)")
        return lines
    for p in threadpool_info():
        lines.append(
            f"loaded {p.get('user_api')}: {p.get('internal_api')} {p.get('version')}, kernel "
            f"{p.get('architecture', '?')}, {p.get('num_threads')} threads ({os.path.basename(p.get('filepath', ''))})"
        )
    return lines


def describe(threads: int, torch=None) -> list[str]:
    """Markdown bullet lines describing the machine and the software."""
    import numpy as np

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"CPU: {cpu_model()} ({_cpu_flags()}); {os.cpu_count()} logical cores, {affinity} usable",
        f"load average at start (1, 5, 15 min): {load}",
        f"Python {sys.version.split()[0]}, numpy {np.__version__}",
        *blas_info(),
        "OPENBLAS_CORETYPE="
        + os.environ.get("OPENBLAS_CORETYPE", "(unset)")
        + ", OPENBLAS_L2_SIZE="
        + os.environ.get("OPENBLAS_L2_SIZE", "(unset)")
        + " (left as found: they select OpenBLAS's kernel)",
        f"threads: {threads} for every framework (OMP/OPENBLAS/MKL_NUM_THREADS, threadpoolctl, torch.set_num_threads)",
    ]
    if torch is not None:
        lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    return lines
