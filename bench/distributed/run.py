"""Run the distributed benchmarks (2 ranks, 1 thread each) and write bench/results/distributed.md.

    python -m bench.distributed.run [--rounds 3] [--out bench/results/distributed.md]

Ember ranks start with ``ember run -n N``, PyTorch's with ``python -m torch.distributed.run``
(torchrun) over gloo; each case runs ``--rounds`` times, alternating the frameworks, and the
median of the rounds is reported with the machine's load average (the development machine is 2
cores shared with other jobs, so compare ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).resolve().parent / "worker.py")


def launch(framework: str, n: int, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if framework == "ember":
        cmd = [sys.executable, "-m", "ember.cli.main", "run", "-n", str(n), WORKER, "ember", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), WORKER, "torch", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed.md"))
    args = ap.parse_args()
    load0 = os.getloadavg()
    t0 = time.time()
    res: dict = {}

    def add(key, row):
        res.setdefault(key, []).append(row)
        print(key, json.dumps(row), flush=True)

    for _ in range(args.rounds):
        for model in ("mlp", "gpt"):
            for fw in ("ember", "torch"):
                add(f"ddp2 {model} {fw}", launch(fw, 2, "ddp", model))
                add(f"ddp1 {model} {fw}", launch(fw, 1, "ddp", model))
        add("allreduce ember", launch("ember", 2, "allreduce"))
        add("allreduce torch", launch("torch", 2, "allreduce"))
        add("zero", launch("ember", 2, "zero"))
        add("trace", launch("ember", 2, "trace"))
        add("tp", launch("ember", 2, "tp"))
        add("pp", launch("ember", 2, "pp", "4"))
        add("pp8", launch("ember", 2, "pp", "8"))

    lines = [
        "## Distributed (hand-written section; `python -m bench.distributed.run`)",
        "",
        f"Command: `python -m bench.distributed.run --rounds {args.rounds}` ({time.time() - t0:.0f} s). "
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores shared with other jobs; "
        f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}. 1 thread per rank; "
        "Ember ranks via `ember run` (MPICH), PyTorch ranks via torchrun over gloo. Medians of "
        f"{args.rounds} rounds, frameworks alternating.",
        "",
        "| case | ember | pytorch | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for model in ("mlp", "gpt"):
        e, t = med(res[f"ddp2 {model} ember"], "step_ms"), med(res[f"ddp2 {model} torch"], "step_ms")
        lines.append(f"| DDP step, {model}, 2 ranks | {e:.1f} ms | {t:.1f} ms | {e / t:.2f}x | <= 1.0x |")
    for model in ("mlp", "gpt"):
        e, t = med(res[f"ddp1 {model} ember"], "step_ms"), med(res[f"ddp1 {model} torch"], "step_ms")
        lines.append(f"| same {model} step, 1 rank (no DDP) | {e:.1f} ms | {t:.1f} ms | {e / t:.2f}x | (reference) |")
    a = med(res["allreduce ember"], "allreduce_16MB_ms")
    raw = med(res["allreduce ember"], "mpi4py_16MB_ms")
    g = med(res["allreduce torch"], "allreduce_16MB_ms")
    lines.append(f"| all_reduce 16 MB float32, 2 ranks | {a:.1f} ms | gloo {g:.1f} ms | {a / g:.2f}x | ~ raw MPI |")
    lines.append(
        f"| same, raw mpi4py `Allreduce(IN_PLACE)` | {raw:.1f} ms | | ember/raw {a / raw:.2f}x | <= 1.0x + noise |"
    )
    lines += ["", "| derived | value | target |", "|---|---|---|"]
    for model in ("mlp", "gpt"):
        for fw in ("ember", "torch"):
            eff = med(res[f"ddp1 {model} {fw}"], "step_ms") / med(res[f"ddp2 {model} {fw}"], "step_ms")
            lines.append(
                f"| weak scaling 1 -> 2 ranks, {model}, {fw} (per-rank throughput kept) | {100 * eff:.0f}% | >= 90% |"
            )
    lines.append(
        f"| exposed communication of a DDP GPT step (trace: time in `wait_allreduce` / step) | "
        f"{100 * med(res['trace'], 'exposed_fraction'):.1f}% | <= 10% |"
    )
    lines.append(
        f"| same, on the rank that reaches the wait last (per step, the smaller of the two ranks) | "
        f"{100 * med(res['trace'], 'exposed_fraction_min_rank'):.1f}% | <= 10% |"
    )
    lines.append(
        f"| all-reduce spans running beside backward (trace, share of the step) | "
        f"{100 * med(res['trace'], 'comm_span_fraction'):.1f}% | |"
    )
    z = res["zero"]
    lines.append(f"| GPT parameters (fp32) | {z[0]['params_MB']:.2f} MB on every rank | |")
    for mode, what in (("ddp", "DDP + Adam"), ("zero1", "DDP + ZeRO-1 Adam"), ("zero2", "ZeRO-2 Adam")):
        step = statistics.median(r[mode]["step_ms"] for r in z)
        lines.append(
            f"| {what}, GPT, 2 ranks: step; per rank: optimizer state, gradients held | {step:.1f} ms; "
            f"{z[0][mode]['optimizer_state_MB']:.2f} MB, {z[0][mode]['grads_MB']:.2f} MB | reported |"
        )
    tp = res["tp"]
    lines.append(
        f"| tensor parallel GPT fwd+bwd, 2 ranks vs 1 process | {med(tp, 'tp_ms'):.1f} ms vs {med(tp, 'single_ms'):.1f} ms "
        f"(speed-up {med(tp, 'speedup'):.2f}x of ideal 2x) | reported |"
    )
    for key in ("pp", "pp8"):
        pp = res[key]
        lines.append(
            f"| pipeline 1F1B GPT, 2 stages, {pp[0]['microbatches']} micro-batches vs 1 process | "
            f"{med(pp, 'pp_ms'):.1f} ms vs {med(pp, 'single_ms'):.1f} ms (speed-up {med(pp, 'speedup'):.2f}x); "
            f"bubble ideal {100 * pp[0]['ideal_bubble']:.0f}%, measured idle {100 * med(pp, 'measured_bubble'):.0f}% | reported |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
