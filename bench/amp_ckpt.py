"""Mixed precision and activation checkpointing on the GPT training step, Ember beside PyTorch.

``python -m bench.amp_ckpt [--steps 10] [--threads 1] [--tiny] [--json out.json]`` runs the
bench GPT workload (``bench.wl_train._gpt``: 4 layers, 4 heads, width 128, context 64, batch 16,
AdamW) in three modes, each framework and mode in its own process (so peak memory is its own):

* ``fp32``: the plain float32 step;
* ``bf16``: forward and loss under ``autocast("cpu", dtype=bfloat16)``, backward and AdamW as usual;
* ``ckpt``: float32, every block checkpointed (``utils.checkpoint.checkpoint``, non-reentrant).

It prints the median step time (the three modes alternate round by round in one process; with
one thread, the process's CPU time, so that other load on the machine does not distort it) and
the peak resident memory of a step above the memory live before it (model and optimizer state;
freed heap is returned to the OS first with ``malloc_trim``, so the number is what the step's
activations, gradients and temporaries take), and each mode's ratio to fp32 of the same framework.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time

MODES = ("fp32", "bf16", "ckpt")


def _setup(torch, mode: str, tiny: bool):
    from bench.wl_train import _gpt, _token_batch

    vocab = 65
    layers, heads, width, context, batch = (1, 2, 16, 8, 2) if tiny else (4, 4, 128, 64, 16)
    model = _gpt(torch, vocab, layers, heads, width, context, ckpt=mode == "ckpt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x, y = _token_batch(torch, batch, context, vocab)
    F = torch.nn.functional
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16")

    def step():
        with amp:
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def _trim() -> None:
    """Return freed heap to the OS (glibc ``malloc_trim``), so resident memory is live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory_one(fw: str, mode: str, threads: int, tiny: bool) -> dict:
    """Peak resident memory of a training step above the memory live before it (model, optimizer
    state after one step), in KiB: activations, gradients and temporaries."""
    from bench import memory, run

    run.limit_threads(threads)
    module = run.load_modules(fw, threads)[fw]
    module.manual_seed(0)
    _setup(module, mode, True)()  # a tiny step first: lazy one-time costs stay out of the number
    step = _setup(module, mode, tiny)
    step()  # the optimizer's state exists from here on
    _trim()
    base = memory._status_kib("VmRSS")
    if memory._reset_peak():
        for _ in range(3):
            step()
            _trim()
        peak, method = memory._status_kib("VmHWM"), "clear_refs"
    else:
        _, peak, method = memory.measure_peak(step, 3)
    return {"fw": fw, "mode": mode, "step_peak_kib": peak - base, "method": method}


def time_modes(fw: str, steps: int, threads: int, tiny: bool) -> dict:
    """Median step time of each mode, the modes alternating round by round (load drift hits all)."""
    from bench import run

    run.limit_threads(threads)
    module = run.load_modules(fw, threads)[fw]
    module.manual_seed(0)
    # With one thread, the process's CPU time is its step time on an idle machine, and a loaded
    # machine (other processes on the cores) does not inflate it.
    clock = time.process_time if threads == 1 else time.perf_counter
    fns = {mode: _setup(module, mode, tiny) for mode in MODES}
    for fn in fns.values():
        fn()
    times = {mode: [] for mode in MODES}
    for _ in range(steps):
        for mode, fn in fns.items():
            t0 = clock()
            fn()
            times[mode].append(clock() - t0)
    return {mode: 1e3 * statistics.median(v) for mode, v in times.items()}


def _child(args: list) -> dict:
    cmd = [sys.executable, "-m", "bench.amp_ckpt", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.amp_ckpt", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode (median reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--fw", choices=("all", "ember", "torch"), default="all")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--memory", nargs=2, metavar=("FW", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--time", metavar="FW", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory:
        print(json.dumps(memory_one(*args.memory, args.threads, args.tiny)), flush=True)
        return 0
    if args.time:
        print(json.dumps(time_modes(args.time, args.steps, args.threads, args.tiny)), flush=True)
        return 0
    fws = ("ember", "torch") if args.fw == "all" else (args.fw,)
    common = ["--steps", str(args.steps), "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
    results = []
    for fw in fws:
        ms = _child(["--time", fw, *common])
        for mode in MODES:
            r = _child(["--memory", fw, mode, *common])
            r["ms"] = ms[mode]
            results.append(r)
    base = {r["fw"]: r for r in results if r["mode"] == "fp32"}
    print("| framework | mode | step time | vs fp32 | step peak memory | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for r in results:
        b = base[r["fw"]]
        mem_ratio = r["step_peak_kib"] / b["step_peak_kib"] if b["step_peak_kib"] > 0 else float("nan")
        print(
            f"| {r['fw']} | {r['mode']} | {r['ms']:.1f} ms | {r['ms'] / b['ms']:.2f}x | "
            f"{r['step_peak_kib'] / 1024:.1f} MiB | {mem_ratio:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
