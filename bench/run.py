"""Run the benchmarks: ``python -m bench.run [--quick] [--out BENCHMARKS.md] [--fw all|ember|torch]``.

Every workload runs on Ember and on PyTorch (and NumPy where it is the baseline) in the same
process, alternating, with all of them limited to the same number of threads. Results print as
they come and, with ``--out``, replace the generated section of a Markdown file (between the
``bench:begin``/``bench:end`` markers), keeping hand-written notes around it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import statistics
import sys
import time

from bench import harness

#: Modules whose import registers workloads; later workloads (training steps) add theirs here.
WORKLOAD_MODULES = ["bench.micro"]

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and shorter batches (loaded machines)")
    p.add_argument("--out", help="Markdown file whose generated section is replaced with the results")
    p.add_argument("--threads", type=int, default=1, help="thread limit for every framework (default 1)")
    p.add_argument("--fw", choices=("all", "ember", "torch"), default="all", help="frameworks to run")
    p.add_argument("--group", action="append", help="run only these groups (repeatable)")
    p.add_argument("--rounds", type=int, help="alternating rounds per case (default 21, quick 7)")
    return p.parse_args(argv)


def limit_threads(n: int) -> None:
    """Limit BLAS/OpenMP pools to ``n`` threads: env vars (before NumPy loads), then threadpoolctl."""
    if "numpy" in sys.modules:
        print("note: numpy was imported before the thread limit; relying on threadpoolctl", file=sys.stderr)
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    import numpy  # noqa: F401  (load the BLAS so threadpoolctl can see it)

    threadpool_limits(limits=n)


def load_modules(fw: str, threads: int) -> dict:
    import numpy

    modules = {"numpy": numpy}
    if fw in ("all", "ember"):
        import ember

        ember.set_num_threads(threads)
        modules["ember"] = ember
    if fw in ("all", "torch"):
        import torch

        torch.set_num_threads(threads)
        modules["torch"] = torch
    return modules


def _table(group: str, results: list) -> list[str]:
    names = []
    for r in results:
        names += [n for n in r.samples if n not in names]
    head = ["case", *names, "ratio", "per-round ratio: median (min-max)", "target", "met"]
    lines = [f"### {group}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.medians
        ratio = r.ratio()
        cells = [r.case.name, *(harness.fmt_time(m[n]) if n in m else "" for n in names)]
        cells.append(f"{ratio:.2f}x ember/{r.case.baseline}" if ratio is not None else "n/a")
        rr = r.round_ratios()
        cells.append(f"{statistics.median(rr):.2f}x ({rr[0]:.2f}-{rr[-1]:.2f})" if rr else "n/a")
        cells.append(f"<= {r.case.target}x" if r.case.target else "report")
        met = r.met()
        cells.append("n/a" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    faulty = [r for r in results if any(f >= 1 for f in r.faults.values())]
    if faulty:
        lines += ["", "Minor page faults per call (fresh memory mapped in by each call):", ""]
        for r in faulty:
            lines.append(f"- {r.case.name}: " + ", ".join(f"{n} {f:.0f}" for n, f in r.faults.items()))
    notes = [f"{r.case.name}: {r.case.note}" for r in results if r.case.note]
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    vs_torch = [(r.case.name, r.ratio("ember", "torch")) for r in results if r.case.baseline != "torch"]
    vs_torch = [f"{n}: {x:.2f}x" for n, x in vs_torch if x is not None]
    if vs_torch:
        lines += ["", "ember/torch: " + "; ".join(vs_torch)]
    return lines + [""]


def report(results: dict, args, machine: list[str], seconds: float) -> str:
    cmd = "python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    mode = "quick" if args.quick else "full"
    lines = [
        BEGIN,
        "## Latest run",
        "",
        f"Command: `{cmd.strip()}` ({mode} mode, {args.rounds} alternating rounds per case, "
        f"{seconds:.0f} s in all). Times are medians per call over the rounds; ratio = ember / baseline "
        "of those medians (what `met` judges). Each round times every implementation back to back, so the "
        "per-round ratios show the spread that other processes on the machine cause.",
        "",
        *(f"- {line}" for line in machine),
        "",
    ]
    for group, rs in results.items():
        lines += _table(group, rs)
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_out(path: str, section: str) -> None:
    """Replace the generated section of ``path`` (or create the file), keeping the rest."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n\n## Notes\n"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + section.rstrip("\n") + post
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.rounds = args.rounds or (7 if args.quick else 21)
    min_batch = 0.02 if args.quick else 0.05
    limit_threads(args.threads)
    modules = load_modules(args.fw, args.threads)
    from bench import machine

    info = machine.describe(args.threads, modules.get("torch"))
    print("\n".join(info), flush=True)
    for name in WORKLOAD_MODULES:
        importlib.import_module(name)
    start = time.perf_counter()
    results: dict = {}
    for group, cases in harness.REGISTRY.items():
        if args.group and group not in args.group:
            continue
        for case in cases:
            # --fw leaves the other framework's module out, so measure skips it (baselines still run).
            r = harness.measure(case, modules, rounds=args.rounds, min_batch_s=min_batch)
            results.setdefault(group, []).append(r)
            times = ", ".join(f"{n} {harness.fmt_time(t)}" for n, t in r.medians.items())
            ratio = r.ratio()
            print(f"[{group}] {case.name}: {times}" + (f"; ember/{case.baseline} {ratio:.2f}x" if ratio else ""))
    section = report(results, args, info, time.perf_counter() - start)
    if args.out:
        write_out(args.out, section)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
