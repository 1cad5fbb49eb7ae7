"""The benchmark suite: every workload runs on both frameworks, the statistics, and the report.

Workloads run at their ``tiny`` sizes; no timing is asserted (the machine is shared).
"""

from __future__ import annotations

import json
import math
import os
import struct

import pytest
import torch

import ember
from bench import harness, run, wl_ops, wl_train
from ember.cli import bench as cli_bench
from ember.cli.main import build_parser

FRAMEWORKS = {"ember": ember, "torch": torch}
TRAIN = harness.REGISTRY["train"]
OPS = harness.REGISTRY["ops"]


def _ids(cases):
    return [c.name for c in cases]


def test_registry_holds_the_five_training_workloads():
    assert tuple(c.name for c in TRAIN) == wl_train.TRAIN_NAMES
    assert all(c.target == 1.5 and c.baseline == "torch" for c in TRAIN)
    assert wl_ops.conv2d_fb.target == wl_ops.softmax_fb.target == wl_ops.layer_norm_fb.target == 1.5


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", TRAIN, ids=_ids(TRAIN))
def test_training_step_runs_and_learns(case, fw):
    module = FRAMEWORKS[fw]
    module.manual_seed(0)
    step = case.impls[fw](module, tiny=True)
    # The step closes over its model; its parameters must move (forward, backward and step all ran).
    model = next(c.cell_contents for c in _closure(step) if isinstance(c.cell_contents, module.nn.Module))
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert all(p.grad is not None for p in model.parameters())
    moved = [not module.equal(b, p.detach()) for b, p in zip(before, model.parameters())]
    assert any(moved)


def _closure(fn):
    return fn.__closure__ or ()


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", OPS, ids=_ids(OPS))
def test_op_workload_runs(case, fw):
    step = case.impls[fw](FRAMEWORKS[fw], tiny=True)
    step()
    step()


def test_op_fwd_bwd_leaves_gradients():
    step = wl_ops.conv2d_fb.impls["ember"](ember, tiny=True)
    x, w = next(c.cell_contents for c in _closure(step) if isinstance(c.cell_contents, tuple))
    step()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


# --------------------------------------------------------------------------- statistics
def _result(samples, target=1.5, group="train", name="w"):
    case = harness.Case(group, name, {}, {}, "torch", target)
    return harness.Result(case, samples, {k: 1 for k in samples})


def test_median_ratio_and_round_ratios():
    r = _result({"ember": [3.0, 1.0, 2.0, 10.0, 2.5], "torch": [1.0, 1.0, 2.0, 1.0, 5.0]})
    assert r.medians == {"ember": 2.5, "torch": 1.0}
    assert r.ratio() == 2.5
    assert r.ratio("torch", "ember") == pytest.approx(0.4)
    assert r.round_ratios() == [0.5, 1.0, 1.0, 3.0, 10.0]
    assert r.met() is False
    assert _result({"ember": [1.0]}).ratio() is None  # baseline did not run
    assert _result({"ember": [1.0], "torch": [1.0]}, target=None).met() is None


def test_geomean():
    assert wl_train.geomean([2.0, 0.5]) == pytest.approx(1.0)
    assert wl_train.geomean([1.0, 2.0, 4.0]) == pytest.approx(2.0)
    assert wl_train.geomean([3.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        wl_train.geomean([])


def test_memory_ratio():
    assert run.memory_ratio({"ember": {"step_peak_kib": 300}, "torch": {"step_peak_kib": 200}}) == 1.5
    assert run.memory_ratio({"ember": {"step_peak_kib": 300}, "torch": {"error": "exit 1"}}) is None
    assert run.memory_ratio({"ember": {"step_peak_kib": 300}, "torch": {"step_peak_kib": 0}}) is None


def test_target_rows_geomean_memory_and_ops():
    results = {
        "train": [
            _result({"ember": [2.0], "torch": [1.0]}, name="a"),
            _result({"ember": [1.0], "torch": [2.0]}, name="b"),
        ],
        "ops": [
            _result({"ember": [1.0], "torch": [1.0]}, group="ops", name="op"),
            _result({"ember": [1.0], "torch": [1.0]}, None, "ops", "r"),
        ],
    }
    mem = {"a": {"ember": {"step_peak_kib": 400}, "torch": {"step_peak_kib": 100}}}
    rows = run.target_rows(results, mem)
    assert [r.label for r in rows] == ["a step", "b step", "geomean of 2 steps", "a memory", "op"]
    assert [r.ratio for r in rows] == pytest.approx([2.0, 0.5, 1.0, 4.0, 1.0])
    assert [r.target for r in rows] == [1.5, 1.5, 1.2, 1.5, 1.5]
    assert [r.met for r in rows] == [False, True, True, False, True]


def test_selected():
    case = wl_ops.conv2d_fb
    assert run.selected(case, None)
    assert run.selected(case, ["conv2d"]) and run.selected(case, ["ops"])
    assert not run.selected(wl_train.moe_gpt, ["gpt"])  # a name selects itself, not its suffixes
    assert run.selected(wl_train.gpt, ["gpt"])


# --------------------------------------------------------------------------- report
def test_markdown_tables_and_write_out(tmp_path):
    results = {"train": [_result({"ember": [0.003, 0.004, 0.005], "torch": [0.002, 0.002, 0.002]}, name="mlp")]}
    mem = {
        "mlp": {
            "ember": {"step_peak_kib": 2048, "setup_kib": 1024, "method": "clear_refs"},
            "torch": {"step_peak_kib": 1024, "setup_kib": 1024},
        }
    }
    args = run.parse_args(["--quick"])
    args.rounds = 3
    section = run.report(results, args, ["CPU: test"], 1.0, mem)
    assert section.startswith(run.BEGIN) and section.rstrip().endswith(run.END)
    assert "| mlp | 4.00 ms | 2.00 ms | 2.00x ember/torch | 2.00x (1.50-2.50) | <= 1.5x | **no** |" in section
    assert "| mlp step | 2.00x ember/torch | <= 1.5x | **no** |" in section
    assert "| mlp memory | 2.00x ember/torch | <= 1.5x | **no** |" in section
    assert "| mlp | 2.0 MiB | 1.0 MiB | 2.00x | <= 1.5x | **no** | 1.0 MiB / 1.0 MiB |" in section
    assert "Met 0 of 3 targets. Missed: mlp step; geomean of 1 steps; mlp memory." in section
    path = tmp_path / "B.md"
    path.write_text("# Title\n\n" + run.BEGIN + "\nold\n" + run.END + "\n\n## Notes\nkept\n")
    run.write_out(str(path), section)
    text = path.read_text()
    assert "old" not in text and "## Notes\nkept" in text and text.startswith("# Title")
    doc = run.to_json(results, mem, run.target_rows(results, mem), ["CPU: test"], args)
    assert json.loads(json.dumps(doc))["targets"][0]["met"] is False


def test_chart_png(tmp_path):
    rows = [run.TargetRow("a step", 1.2, 1.5), run.TargetRow("b", 2.0, 1.05), run.TargetRow("c", None, 1.5)]
    path = tmp_path / "r.png"
    cli_bench.draw_chart(rows, str(path))
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 100 and height > 100


# --------------------------------------------------------------------------- memory and CLI
def test_measure_peak_sees_an_allocation():
    # In a fresh process: in this one, earlier tests leave freed pages that the allocator may hand
    # back already resident, so a new block need not raise the RSS at all.
    import subprocess
    import sys

    code = """
import numpy as np
from bench import memory
block = 64 << 20  # 64 MiB, touched page by page
base, peak, method = memory.measure_peak(lambda: np.ones(block // 8), 1)
assert method in ("clear_refs", "sampling"), method
assert peak - base >= 0.9 * block / 1024, (base, peak, method)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_memory_process_tiny():
    out = run.measure_memory("mlp", "ember", threads=1, steps=1, tiny=True)
    assert out.get("error") is None, out
    assert out["fw"] == "ember" and out["step_peak_kib"] >= 0 and out["import_kib"] > 0
    bad = run.measure_memory("no-such-workload", "ember", threads=1, steps=1)
    assert "unknown workload" in bad["error"]


def test_cli_bench_command():
    args = build_parser().parse_args(["bench", "--quick", "--workloads", "mlp,gpt", "--threads", "2"])
    cmd = cli_bench.command(args)
    assert cmd[1:3] == ["-m", "bench.run"] and "--quick" in cmd
    assert cmd[cmd.index("--workloads") + 1] == "mlp,gpt" and cmd[cmd.index("--threads") + 1] == "2"
    assert cmd[cmd.index("--out") + 1] == os.path.abspath("BENCHMARKS.md")
    assert os.path.isfile(os.path.join(cli_bench.bench_root(), "bench", "run.py"))
    assert math.isfinite(float(cmd[cmd.index("--threads") + 1]))
