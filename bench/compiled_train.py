"""The compiled column: the five training steps as Ember compiled, Ember eager, PyTorch eager and
``torch.compile``, alternating in one run (``bench.harness.measure``), plus the Python time per
compiled call and cold/warm compile times of ``ember.compile``.

What "Ember compiled" compiles is chosen per workload and printed: the whole step
(``ember.compile(step)``) where capture takes it as one graph (backward and optimizer step
inside), else the model (``ember.compile(model)``: forward and, through the joint graph, the
backward) with an eager ``backward()`` call and optimizer step; the label says which parts run
compiled. ``torch.compile`` compiles PyTorch's whole step function.

Python time per compiled call: the compiled step (where it is one program) or the compiled
model's forward, less the time spent inside its native segments: guards, pointer setup, output
allocation, ctypes crossings and writebacks; not reported where some op runs eagerly.

Run: ``PYTHONPATH=. python bench/compiled_train.py [--rounds 7] [--no-torch-compile] [--write]``
(``--write`` replaces the compiled section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from bench import harness, wl_train
from bench.run import limit_threads, load_modules

__all__ = ["compiled_step", "python_time", "compile_times", "main"]

_BEGIN, _END = "<!-- compiled:begin -->", "<!-- compiled:end -->"


def _parts(step) -> dict:
    return dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))


def _loss_step(F, model, opt, x, y, flat):
    def step():
        logits = model(x)
        if flat:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def compiled_step(ember, name: str, tiny: bool = False) -> tuple:
    """``(step, label)``: the workload's training step with as much as ember.compile takes."""
    step = getattr(wl_train, name.replace("-", "_")).impls["ember"](ember, tiny=tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = ember.compile(step)
        whole()
    entries = list(whole.cache.values())
    if entries and all(hasattr(e, "graph") for e in entries):
        prog = getattr(entries[-1], "program", None)
        if prog is None:
            return whole, "whole step compiled (replayed op by op)"
        segs = sum(1 for fn, _ in prog.plan if fn is not None)
        eager = len(prog.spec.eager_nodes)
        return whole, f"whole step as one program: {segs} native segment(s), {eager} eager op(s)"
    p = _parts(step)
    cm = ember.compile(p["model"])
    out = _loss_step(ember.nn.functional, cm, p["opt"], p["x"], p["y"], p.get("flat_logits", False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out()
    (entry,) = cm._compiled.cache.values()
    if isinstance(entry, str):
        return out, f"eager (compile fell back: {entry[:60]})"
    if getattr(entry, "joint", False):
        return out, "forward+backward compiled (joint graph); eager optimizer step"
    why = "; ".join(str(w.message)[:60] for w in caught) or "backward not captured"
    return out, f"forward captured, with gradients op by op ({why})"


def _torch_compiled(torch, name: str):
    step = getattr(wl_train, name.replace("-", "_")).impls["torch"](torch)
    return torch.compile(step)


def python_time(ember, name: str, rounds: int = 200) -> float | None:
    """Median CPU seconds of Python per compiled call (this thread's CPU time, steady on a loaded
    machine; the bench runs on one thread): the call's time less the time inside its native segments, for the whole training step where it runs as one program, else the model's forward
    (no_grad). None where an op of that program runs eagerly (its time is not Python's)."""
    import numpy as np

    step, _label = compiled_step(ember, name)
    if hasattr(step, "cache"):  # a whole step: its guards settle after the second call
        step()
        step()
    entries = list(getattr(step, "cache", {}).values())
    prog = getattr(entries[-1], "program", None) if entries else None
    call = step
    if prog is None:
        p = _parts(getattr(wl_train, name.replace("-", "_")).impls["ember"](ember))
        cm = ember.compile(p["model"])
        with ember.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm(p["x"])
        (entry,) = cm._compiled.cache.values()
        prog = getattr(entry, "steps", None)

        def call():
            with ember.no_grad():
                cm(p["x"])

    if not hasattr(prog, "plan") or prog.spec.eager_nodes:
        return None
    native = [0.0]

    def timed(fn):
        def segment(P):
            t0 = time.thread_time()
            rc = fn(P)
            native[0] += time.thread_time() - t0
            return rc

        return segment

    saved = prog.plan
    prog.plan = [(timed(fn) if fn is not None else None, x) for fn, x in saved]
    try:
        call()
        ts = []
        for _ in range(rounds):
            native[0] = 0.0
            t0 = time.thread_time()
            call()
            ts.append(time.thread_time() - t0 - native[0])
    finally:
        prog.plan = saved
    return float(np.median(ts))


_FIRST = """
import sys, time, warnings
warnings.simplefilter("ignore")
import ember
from ember.backends import ckernels
from ember.backends.ckernels import optim
from bench import compiled_train, wl_train
ckernels.get()  # the hand-kernel libraries are not part of a workload's compile
optim._lib()
ember.set_num_threads(1)
ember.manual_seed(0)
step = getattr(wl_train, sys.argv[1].replace("-", "_")).impls["ember"](ember)
if sys.argv[2] == "step":  # both step graphs (the first step's, the steady state's) less two runs
    fn = ember.compile(step)
    t0 = time.perf_counter()
    fn()
    fn()
    t1 = time.perf_counter()
    fn()
    print(t1 - t0 - 2 * (time.perf_counter() - t1))
else:
    p = compiled_train._parts(step)
    cm = ember.compile(p["model"])
    t0 = time.perf_counter()
    with ember.no_grad():
        cm(p["x"])
    print(time.perf_counter() - t0)
"""


def compile_times(name: str, what: str = "step") -> tuple:
    """Compile time in a new process, ``(cold cache, warm cache)`` seconds: for ``what="step"``
    the whole training step's two graphs (its first two calls less two steady-state runs), for
    ``"forward"`` the model's first compiled forward call (no_grad)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, EMBER_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", _FIRST, name, what], env=env, capture_output=True, text=True)
            out.append(float(r.stdout.split()[-1]) if r.returncode == 0 else float("nan"))
    return tuple(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    ap.add_argument("--only", nargs="*", default=list(wl_train.TRAIN_NAMES))
    args = ap.parse_args(argv)
    limit_threads(args.threads)
    modules = load_modules("all", args.threads)
    ember = modules["ember"]
    labels, rows = {}, []
    for name in args.only:
        case = harness.Case("compiled", name, baseline="torch")
        case.impls["ember compiled"] = lambda m, name=name: _label(labels, name, compiled_step(m, name))
        case.module_of["ember compiled"] = "ember"
        case.impls["ember eager"] = getattr(wl_train, name.replace("-", "_")).impls["ember"]
        case.module_of["ember eager"] = "ember"
        case.impls["torch"] = getattr(wl_train, name.replace("-", "_")).impls["torch"]
        case.module_of["torch"] = "torch"
        if not args.no_torch_compile:
            case.impls["torch.compile"] = lambda m, name=name: _torch_compiled(m, name)
            case.module_of["torch.compile"] = "torch"
        r = harness.measure(case, modules, rounds=args.rounds)
        m = r.medians
        py = python_time(ember, name)
        cold, warm = compile_times(name, "step" if "whole step" in labels.get(name, "") else "forward")
        row = (name, m, py, cold, warm, labels.get(name, ""))
        rows.append(row)
        print(_fmt_row(row), flush=True)
    lines = _section(rows, args)
    print("\n".join(lines))
    if args.write:
        _write(lines)


def _label(labels, name, pair):
    labels[name] = pair[1]
    return pair[0]


def _ms(m, k) -> str:
    return f"{m[k] * 1e3:.2f}" if k in m else "-"


def _ratio(m, a, b) -> str:
    return f"{m[a] / m[b]:.2f}x" if a in m and b in m else "-"


def _fmt_row(row) -> str:
    name, m, py, cold, warm, label = row
    py_s = "-" if py is None else f"{py * 1e6:.0f}"
    return (
        f"| {name} | {_ms(m, 'ember compiled')} | {_ms(m, 'ember eager')} | {_ms(m, 'torch')} | "
        f"{_ms(m, 'torch.compile')} | {_ratio(m, 'ember compiled', 'torch')} | "
        f"{_ratio(m, 'ember compiled', 'torch.compile')} | {py_s} | {cold:.2f} / {warm:.2f} | {label} |"
    )


def _geo(rows, a, b) -> str:
    vals = [r[1][a] / r[1][b] for r in rows if a in r[1] and b in r[1]]
    return f"{statistics.geometric_mean(vals):.2f}x" if vals else "-"


def _section(rows, args) -> list:
    cmd = f"PYTHONPATH=. python bench/compiled_train.py --rounds {args.rounds} --threads {args.threads}"
    out = [
        _BEGIN,
        "## Compiled training steps (issue 9): Ember compiled, Ember eager, PyTorch eager, torch.compile",
        "",
        f"`{cmd}` (median ms per step, {args.rounds} alternating rounds, {args.threads} thread(s); written by the bench).",
        "Python time: the compiled step where it is one program, else the compiled forward, less the time "
        "inside its native segments ('-': some op runs eagerly between segments).",
        "Compile: in a new process, cold cache / warm cache (seconds): a whole step's two graphs (first two "
        "calls less two steady-state runs), else the first compiled forward call.",
        "",
        "| workload | ember compiled | ember eager | torch | torch.compile | compiled/torch | compiled/torch.compile "
        "| Python us/call | compile cold / warm s | what runs compiled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [_fmt_row(r) for r in rows]
    out.append(
        f"| geometric mean | | | | | {_geo(rows, 'ember compiled', 'torch')} | "
        f"{_geo(rows, 'ember compiled', 'torch.compile')} | | | |"
    )
    out.append(_END)
    return out


def _write(lines) -> None:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")
    text = open(path).read()
    block = "\n".join(lines)
    if _BEGIN in text and _END in text:
        head, rest = text.split(_BEGIN, 1)
        text = head + block + rest.split(_END, 1)[1]
    else:
        marker = "\n## Notes\n"
        text = text.replace(marker, "\n" + block + "\n" + marker, 1) if marker in text else text + "\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
