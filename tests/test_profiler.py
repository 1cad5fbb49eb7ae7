"""The profiler sees forward ops and backward nodes, nests self time, and leaves no wrappers behind."""

import json

import ember
from ember.profiler import profile, record_function


def test_counts_forward_and_backward_ops(tmp_path):
    x = ember.randn(8, 8, requires_grad=True)
    with profile() as prof:
        for _ in range(2):
            (x @ x).relu().sum().backward()
    stats = {(e.key, e.phase): e for e in prof.key_averages()}
    assert stats[("matmul", "forward")].count == 2
    assert stats[("matmul", "backward")].count == 4  # called by the two MatmulBackward0 runs
    assert stats[("relu", "forward")].count == 2
    assert stats[("MatmulBackward0", "backward")].count == 2
    for e in stats.values():
        assert 0 <= e.self_cpu_time_total <= e.cpu_time_total + 1e-6
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=5)
    assert "Self CPU" in table and "# of Calls" in table
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(trace)
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["name"] == "matmul" for e in events)


def test_composite_self_time_excludes_children():
    x = ember.randn(100, 100)
    with profile() as prof:
        x.mean(0)
    stats = {e.key: e for e in prof.key_averages()}
    var = stats["mean"]
    assert var.cpu_time_total >= stats["sum"].cpu_time_total
    assert var.self_cpu_time_total < var.cpu_time_total


def test_record_function_and_nothing_patched():
    original = ember.Tensor.__add__
    with profile() as prof:
        with record_function("my_region"):
            ember.ones(2) + 1
        assert ember.Tensor.__add__ is original  # a mode of apply: no function is replaced
    assert ember.Tensor.__add__ is original
    assert ember.add is original
    assert any(e.key == "my_region" for e in prof.key_averages())
