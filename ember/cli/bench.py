"""``ember bench``: time Ember against PyTorch on the benchmark suite, write BENCHMARKS.md and a chart.

The suite lives in the source checkout's ``bench/`` folder (next to the ``ember`` package). It
runs in a child process, ``python -m bench.run``, for two reasons: the thread limits must be set
before NumPy is first imported (this process already imported it), and Ember's own process never
imports PyTorch. The child writes the Markdown section and the chart; this module only builds its
command line, and holds :func:`draw_chart`, which the child calls.

Example (from the repository root)::

    ember bench --quick --workloads mlp,gpt --chart bench/ratios.png
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["bench_root", "command", "main", "draw_chart"]


def bench_root() -> str:
    """The folder holding ``bench/run.py``: the source checkout this ``ember`` was imported from."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (here, os.getcwd()):
        if os.path.isfile(os.path.join(root, "bench", "run.py")):
            return root
    raise SystemExit("ember bench: no bench/run.py next to the ember package or in the current folder")


def command(args) -> list[str]:
    """The ``python -m bench.run`` command line for the parsed ``ember bench`` arguments."""
    cmd = [sys.executable, "-m", "bench.run", "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    if args.workloads:
        cmd += ["--workloads", args.workloads]
    if args.out:
        cmd += ["--out", os.path.abspath(args.out)]
    if args.chart:
        cmd += ["--chart", os.path.abspath(args.chart)]
    if args.json:
        cmd += ["--json", os.path.abspath(args.json)]
    if args.no_memory:
        cmd.append("--no-memory")
    return cmd


def main(args) -> int:
    root = bench_root()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.run(command(args), cwd=root, env=env).returncode


def draw_chart(rows, path: str, title: str = "ember / baseline") -> None:
    """Bar chart of ``rows`` (objects with ``label``, ``ratio``, ``target``, ``met``) saved as PNG.

    Bars are green where the target is met and red where it is missed; a grey line marks 1.0
    (parity) across the chart and a short black line over each bar marks that row's target.
    Rows without a ratio are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.ratio is not None]
    if not rows:
        raise ValueError("draw_chart: no ratios to draw")
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 5.0))
    colors = ["tab:green" if r.met else "tab:red" for r in rows]
    ax.bar(xs, [r.ratio for r in rows], color=colors, width=0.7)
    ax.axhline(1.0, color="grey", linewidth=1, label="1.0 (parity)")
    for x, r in zip(xs, rows):
        ax.hlines(r.target, x - 0.45, x + 0.45, colors="black", linewidth=2, label="target" if x == 0 else None)
        # Above the bar and its target line, so the two never hide the number.
        ax.text(x, max(r.ratio, r.target) + 0.02, f"{r.ratio:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r.label for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ratio (lower is better)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
