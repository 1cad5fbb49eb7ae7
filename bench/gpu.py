"""Ember on a CUDA device beside PyTorch on the same GPU: an 8-op elementwise chain over 16M
float32 (Ember eager: 8 CuPy kernels; Ember compiled: one generated CUDA kernel) and an MLP
training step with Adam. Alternating rounds, medians; prints a Markdown table (and writes it to
``--out`` when given). Needs a GPU, CuPy and PyTorch with CUDA; the GPU image of
``scripts/gpu_check.sh`` has them.

Run: ``PYTHONPATH=. python bench/gpu.py [--rounds 15] [--out gpu.md]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

__all__ = ["main"]


def _chain(lib):
    def f(x):
        return ((((x * 2.0 + 1.0).tanh() * 0.5 - 0.1).exp() + x).relu() * 3.0).sigmoid()

    return f


def _mlp_step(lib, device):
    lib.manual_seed(0)
    nn = lib.nn
    model = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    model = model.to(device)
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    x = lib.randn(512, 1024, device=device)
    y = lib.randint(0, 10, (512,), device=device)

    def step():
        opt.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _timer(sync, fn, reps: int):
    def run():
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t0) / reps * 1e3

    return run


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import cupy
    import torch

    import ember

    def esync():
        cupy.cuda.Device().synchronize()

    tsync = torch.cuda.synchronize
    n = 1 << 24
    ex = ember.randn(n, device="cuda")
    tx = torch.randn(n, device="cuda")
    ef, tf = _chain(ember), _chain(torch)
    ecf = ember.compile(ef)
    with ember.no_grad():
        ecf(ex)  # compile outside the timing
    copy = _timer(esync, lambda: ex._data.copy(), 20)
    cases = {
        "chain8 16M float32": {
            "ember eager": _timer(esync, lambda: ef(ex), 20),
            "ember compiled": _timer(esync, lambda: ecf(ex), 20),
            "torch eager": _timer(tsync, lambda: tf(tx), 20),
            "one CuPy copy": copy,
        },
        "MLP step 1024-2048-2048-10, batch 512, Adam": {
            "ember eager": _timer(esync, _mlp_step(ember, "cuda"), 10),
            "torch eager": _timer(tsync, _mlp_step(torch, "cuda"), 10),
        },
    }
    times = {c: {k: [] for k in fns} for c, fns in cases.items()}
    for _ in range(args.rounds):
        for c, fns in cases.items():
            for k, fn in fns.items():
                if c.startswith("chain"):  # inference; the training step needs gradients
                    with ember.no_grad(), torch.no_grad():
                        times[c][k].append(fn())
                else:
                    times[c][k].append(fn())
    gpu = torch.cuda.get_device_name()
    lines = [
        f"GPU: {gpu}; host {platform.processor() or platform.machine()}; CuPy {cupy.__version__}, "
        f"PyTorch {torch.__version__}; {args.rounds} alternating rounds, medians (ms per call).",
        "",
        "| workload | framework | ms | / torch eager |",
        "|---|---|---|---|",
    ]
    for c, per in times.items():
        med = {k: statistics.median(vals) for k, vals in per.items()}
        for k, m in med.items():
            lines.append(f"| {c} | {k} | {m:.3f} | {m / med['torch eager']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
