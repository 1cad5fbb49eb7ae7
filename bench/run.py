"""Run the benchmarks: ``python -m bench.run [--quick] [--out BENCHMARKS.md] [--fw all|ember|torch]``.

Every workload runs on Ember and on PyTorch (and NumPy where it is the baseline) in the same
process, alternating, with all of them limited to the same number of threads. Then the peak
memory of each training workload is measured on each framework in a fresh process
(``bench/memory.py``). Results print as they come and, with ``--out``, replace the generated
section of a Markdown file (between the ``bench:begin``/``bench:end`` markers), keeping
hand-written notes around it; ``--json`` saves them for tools, ``--chart`` draws the ratios
against their targets (``ember bench`` is the console-script front end). On a machine shared with
other work, ``--cpu-time`` times each batch with the thread's CPU time instead of wall time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from bench import harness

#: Modules whose import registers workloads, in report order.
WORKLOAD_MODULES = ["bench.micro", "bench.wl_train", "bench.wl_ops", "bench.wl_optim"]
TRAIN_GROUP = "train"
GEOMEAN_TARGET = 1.2  # geometric mean of the training-step ratios
MEMORY_TARGET = 1.5  # peak memory of a training step, ember / torch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding bench/

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
    p.add_argument(
        "--workloads",
        help="comma-separated case or group names (a name also selects cases it starts, as 'conv2d')",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the thread's CPU time, not wall time (a loaded machine; single-thread runs only)",
    )
    p.add_argument("--memory-steps", type=int, help="steps per peak-memory process (default 5, quick 3)")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--chart", help="PNG bar chart of the ratios against their targets")
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


def selected(case: harness.Case, names: list[str] | None) -> bool:
    """Whether ``--workloads`` selects ``case``: its group, its name, or a word its name starts with."""
    if not names:
        return True
    return any(n in (case.group, case.name) or case.name.startswith(n + " ") for n in names)


# --------------------------------------------------------------------------- peak memory
def measure_memory(name: str, fw: str, threads: int, steps: int, tiny: bool = False) -> dict:
    """Run ``python -m bench.memory`` for one (framework, workload) in a fresh process; its JSON."""
    cmd = [sys.executable, "-m", "bench.memory", "--fw", fw, "--workload", name]
    cmd += ["--threads", str(threads), "--steps", str(steps)] + (["--tiny"] if tiny else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"fw": fw, "workload": name, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def memory_ratio(per_fw: dict) -> float | None:
    """ember / torch step peak growth; None when either is missing, failed, or torch grew by 0."""
    e, t = per_fw.get("ember", {}), per_fw.get("torch", {})
    if "step_peak_kib" not in e or "step_peak_kib" not in t or t["step_peak_kib"] <= 0:
        return None
    return e["step_peak_kib"] / t["step_peak_kib"]


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def memory_table(memory: dict) -> list[str]:
    head = ["workload", "ember peak", "torch peak", "ratio", "target", "met", "setup: ember / torch"]
    lines = ["### peak memory of a training step", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per_fw in memory.items():
        cells = [name]
        for fw in ("ember", "torch"):
            m = per_fw.get(fw)
            cells.append("" if m is None else m.get("error") or _mib(m["step_peak_kib"]))
        r = memory_ratio(per_fw)
        cells += [f"{r:.2f}x" if r is not None else "n/a", f"<= {MEMORY_TARGET}x"]
        cells.append("n/a" if r is None else ("yes" if r <= MEMORY_TARGET else "**no**"))
        setups = [_mib(per_fw[fw]["setup_kib"]) for fw in ("ember", "torch") if "setup_kib" in per_fw.get(fw, {})]
        cells.append(" / ".join(setups))
        lines.append("| " + " | ".join(cells) + " |")
    methods = sorted({m.get("method", "?") for per_fw in memory.values() for m in per_fw.values() if "method" in m})
    lines += [
        "",
        "Peak = the highest resident set size during the steps minus the resident size after import and "
        "setup, each (framework, workload) in a fresh process (`python -m bench.memory`; peak via "
        f"{', '.join(methods) or 'n/a'}). Setup = what building the model, optimizer and batch added to the "
        "resident size (0 where it reused memory the process had freed before).",
        "",
    ]
    return lines


# --------------------------------------------------------------------------- targets
@dataclass
class TargetRow:
    """One ratio judged against its target (the rows of the summary table and the chart)."""

    label: str
    ratio: float | None
    target: float
    baseline: str = "torch"

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio <= self.target


def target_rows(results: dict, memory: dict) -> list[TargetRow]:
    """Every targeted ratio: training steps, their geometric mean, memory, then the other groups."""
    from bench.wl_train import geomean

    rows = []
    train = results.get(TRAIN_GROUP, [])
    for r in train:
        rows.append(TargetRow(f"{r.case.name} step", r.ratio(), r.case.target, r.case.baseline))
    ratios = [r.ratio() for r in train if r.ratio() is not None]
    if ratios:
        rows.append(TargetRow(f"geomean of {len(ratios)} steps", geomean(ratios), GEOMEAN_TARGET))
    for name, per_fw in memory.items():
        rows.append(TargetRow(f"{name} memory", memory_ratio(per_fw), MEMORY_TARGET))
    for group, rs in results.items():
        if group == TRAIN_GROUP:
            continue
        for r in rs:
            if r.case.target is not None:
                rows.append(TargetRow(r.case.name, r.ratio(), r.case.target, r.case.baseline))
    return rows


def targets_table(rows: list[TargetRow]) -> list[str]:
    lines = ["### targets", "", "| ratio | value | target | met |", "|---|---|---|---|"]
    for row in rows:
        value = f"{row.ratio:.2f}x ember/{row.baseline}" if row.ratio is not None else "n/a"
        met = "n/a" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.label} | {value} | <= {row.target}x | {met} |")
    judged = [r for r in rows if r.met is not None]
    missed = [r.label for r in judged if not r.met]
    lines += ["", f"Met {len(judged) - len(missed)} of {len(judged)} targets."]
    if missed:
        lines[-1] += " Missed: " + "; ".join(missed) + "."
    return lines + [""]


def to_json(results: dict, memory: dict, rows: list[TargetRow], machine: list[str], args) -> dict:
    cases = []
    for group, rs in results.items():
        for r in rs:
            cases.append(
                {
                    "group": group,
                    "name": r.case.name,
                    "baseline": r.case.baseline,
                    "target": r.case.target,
                    "medians_s": r.medians,
                    "ratio": r.ratio(),
                    "round_ratios": r.round_ratios(),
                }
            )
    targets = [dict(asdict(row), met=row.met) for row in rows]
    mode = "quick" if args.quick else "full"
    return {"machine": machine, "mode": mode, "cases": cases, "memory": memory, "targets": targets}


def report(results: dict, args, machine: list[str], seconds: float, memory: dict | None = None) -> str:
    cmd = "python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    mode = "quick" if args.quick else "full"
    lines = [
        BEGIN,
        "## Latest run",
        "",
        f"Command: `{cmd.strip()}` ({mode} mode, {args.rounds} alternating rounds per case, "
        f"{seconds:.0f} s in all{', thread CPU time' if getattr(args, 'cpu_time', False) else ''}). "
        "Times are medians per call over the rounds; ratio = ember / baseline "
        "of those medians (what `met` judges). Each round times every implementation back to back, so the "
        "per-round ratios show the spread that other processes on the machine cause.",
        "",
        *(f"- {line}" for line in machine),
        "",
    ]
    memory = memory or {}
    lines += targets_table(target_rows(results, memory))
    for group, rs in results.items():
        lines += _table(group, rs)
        if group == TRAIN_GROUP and memory:
            lines += memory_table(memory)
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
    if args.cpu_time:
        if args.threads != 1:  # other threads' work would go uncounted
            raise SystemExit("--cpu-time measures one thread: use it with --threads 1")
        harness.TIMER = time.thread_time
    names = [n.strip() for n in args.workloads.split(",") if n.strip()] if args.workloads else None
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
            if not selected(case, names):
                continue
            # --fw leaves the other framework's module out, so measure skips it (baselines still run).
            r = harness.measure(case, modules, rounds=args.rounds, min_batch_s=min_batch)
            results.setdefault(group, []).append(r)
            times = ", ".join(f"{n} {harness.fmt_time(t)}" for n, t in r.medians.items())
            ratio = r.ratio()
            print(f"[{group}] {case.name}: {times}" + (f"; ember/{case.baseline} {ratio:.2f}x" if ratio else ""))
    memory: dict = {}
    if not args.no_memory:
        steps = args.memory_steps or (3 if args.quick else 5)
        fws = [fw for fw in harness.TORCH_LIKE if fw in modules]
        for r in results.get(TRAIN_GROUP, []):
            memory[r.case.name] = {fw: measure_memory(r.case.name, fw, args.threads, steps) for fw in fws}
            shown = {fw: m.get("error") or _mib(m["step_peak_kib"]) for fw, m in memory[r.case.name].items()}
            print(f"[memory] {r.case.name}: " + ", ".join(f"{fw} {v}" for fw, v in shown.items()), flush=True)
    section = report(results, args, info, time.perf_counter() - start, memory)
    rows = target_rows(results, memory)
    if args.out:
        write_out(args.out, section)
        print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(results, memory, rows, info, args), f, indent=1)
        print(f"wrote {args.json}")
    if args.chart:
        from ember.cli.bench import draw_chart

        draw_chart(rows, args.chart, title=f"ember / baseline ({'quick' if args.quick else 'full'} run)")
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
