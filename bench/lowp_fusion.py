"""bfloat16 through ``ember.compile``: fused 2-byte kernels beside eager NumPy/ml_dtypes.

``python -m bench.lowp_fusion [--rounds 15] [--threads 1]`` times, alternating round by round
(medians, one thread):

* ``chain``: an 8-op elementwise chain over 4M bfloat16 elements, eager (every op is an
  ml_dtypes loop: widen, compute, round) vs ``ember.compile`` (one loop: load 16 bits, compute
  in float32, round once); the same chain in float16 and float32 for scale;
* ``gpt``: the bench GPT forward (``bench.wl_train._gpt``, 4 layers, width 128, context 64,
  batch 16) under ``autocast("cpu", dtype=bfloat16)`` in ``no_grad``, eager vs compiled (the
  autocast context inside the compiled function), with the number of fused groups and the
  ops left eager; then the same forward in float32 for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time

__all__ = ["main"]


def _chain(x):
    return ((x * 1.5 + 0.25).tanh() * x - 0.5).sigmoid() * 2 + x.abs()


def _median_pair(f, g, rounds: int) -> tuple:
    a, b = [], []
    for _ in range(rounds):
        for fn, acc in ((f, a), (g, b)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def _groups(cf) -> tuple:
    steps = [s for e in cf.cache.values() for s in e.steps]
    return sum(s[0] == "group" for s in steps), sorted({s[1].op for s in steps if s[0] == "node"})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.lowp_fusion", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from bench import run

    run.limit_threads(args.threads)
    import ember

    ember.set_num_threads(args.threads)
    ember.manual_seed(0)
    x = ember.randn(4 * 1024 * 1024).bfloat16()
    cf = ember.compile(_chain)
    got, want = cf(x), _chain(x)
    err = (got.float() - want.float()).abs().max().item()
    te, tc = _median_pair(lambda: _chain(x), lambda: cf(x), args.rounds)
    print(f"chain bf16 4M, 8 ops: eager {te * 1e3:.1f} ms, compiled {tc * 1e3:.1f} ms ({te / tc:.1f}x); "
          f"groups {_groups(cf)[0]}, max |compiled - eager| {err:.3g}")  # fmt: skip
    xh = x.half()
    cfh = ember.compile(_chain)
    cfh(xh)
    teh, tch = _median_pair(lambda: _chain(xh), lambda: cfh(xh), args.rounds)
    print(f"chain fp16 4M, 8 ops: eager {teh * 1e3:.1f} ms, compiled {tch * 1e3:.1f} ms ({teh / tch:.1f}x)")
    x32 = x.float()
    cf32 = ember.compile(_chain)
    cf32(x32)
    te32, tc32 = _median_pair(lambda: _chain(x32), lambda: cf32(x32), args.rounds)
    print(f"chain fp32 4M, 8 ops: eager {te32 * 1e3:.1f} ms, compiled {tc32 * 1e3:.1f} ms ({te32 / tc32:.1f}x)")

    from bench.wl_train import _gpt, _token_batch

    model = _gpt(ember, 65, 4, 4, 128, 64)
    model.eval()
    tokens, _ = _token_batch(ember, 16, 64, 65)

    def fwd(t):
        with ember.autocast("cpu", dtype=ember.bfloat16):
            return model(t)

    with ember.no_grad():
        cg = ember.compile(fwd)
        got, want = cg(tokens), fwd(tokens)
        err = (got.float() - want.float()).abs().max().item()
        n, eager_ops = _groups(cg)
        te, tc = _median_pair(lambda: fwd(tokens), lambda: cg(tokens), args.rounds)
    print(f"gpt forward, bf16 autocast: eager {te * 1e3:.1f} ms, compiled {tc * 1e3:.1f} ms ({te / tc:.2f}x); "
          f"{n} fused groups, eager ops {eager_ops}; max |compiled - eager| {err:.3g}; "
          f"breaks {getattr(cg, 'breaks', [])}")  # fmt: skip
    with ember.no_grad():
        c32 = ember.compile(lambda t: model(t))
        c32(tokens)
        te, tc = _median_pair(lambda: model(tokens), lambda: c32(tokens), args.rounds)
    print(f"gpt forward, float32: eager {te * 1e3:.1f} ms, compiled {tc * 1e3:.1f} ms ({te / tc:.2f}x)")


if __name__ == "__main__":
    main()
