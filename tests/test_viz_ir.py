"""ember.viz drawings of ember.compile's IR (DOT text) and the ``ember graph`` CLI."""

from __future__ import annotations

import os
import re
import shutil

import pytest

import ember
from ember.cli.main import main as cli_main
from ember.viz import compiled_dot, graph_dot

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None, reason="no C compiler"
)

_NEEDS_C = pytest.mark.skipif(
    os.environ.get("EMBER_CKERNELS") == "0", reason="needs the C kernels and compiler (EMBER_CKERNELS=0)"
)  # counts of graphs and fused groups


def _attrs(src: str, label_start: str) -> str:
    """The attribute list of the vertex whose label starts with ``label_start``."""
    for line in src.splitlines():
        if f'label="{label_start}' in line:
            return line
    raise AssertionError(f"no vertex labelled {label_start!r} in\n{src}")


def test_joint_graph_colours_forward_backward_inputs_and_outputs():
    model = ember.nn.Sequential(ember.nn.Linear(4, 3), ember.nn.ReLU(), ember.nn.Linear(3, 2))
    cm = ember.compile(model)
    cm(ember.randn(5, 4)).sum().backward()
    src = compiled_dot(cm)
    assert src.startswith("digraph compiled {") and src.rstrip().endswith("}")
    assert 'fillcolor="lightsalmon"' in _attrs(src, "%9 linear_backward")  # backward op
    assert 'fillcolor="lightgrey"' in _attrs(src, "%6 linear")  # forward op
    assert 'fillcolor="palegreen"' in _attrs(src, "%5 grad output")
    assert 'fillcolor="lightblue"' in _attrs(src, "%1 0.weight")  # a parameter, by name
    assert "peripheries=2" in _attrs(src, "%8 linear") and "peripheries=2" not in _attrs(src, "%7 relu")
    # every edge joins two drawn vertices; items are drawn as their multi-output call
    drawn = set(re.findall(r"^\s*(n\d+) \[", src, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", src, re.M)
    assert edges and all(a in drawn and b in drawn for a, b in edges)
    assert ("n9", "n14") in edges  # item %10 of linear_backward %9 read by mul %14


@_NEEDS_C
def test_fusion_groups_are_clusters_and_eager_nodes_are_marked():
    f = ember.compile(lambda x: ((x * 2).exp() + 1).cumprod(-1).tanh().sigmoid())
    f(ember.randn(3, 4))
    src = compiled_dot(f)
    clusters = re.findall(r"subgraph cluster_group(\d+) \{\n\s*label=\"group \d+: (\d+) ops\"", src)
    assert [c[1] for c in clusters] == ["3", "2"]  # mul->exp->add and tanh->sigmoid
    assert src.count('fillcolor="#fff2b3"') == 1 and src.count('fillcolor="#d9f2d0"') == 1  # one colour each
    cumprod = _attrs(src, "%4 cumprod")
    assert 'color="red"' in cumprod and "dashed" in cumprod  # runs eagerly between native segments
    assert 'color="red"' not in _attrs(src, "%2 exp")


def test_graph_dot_of_a_plain_capture_and_errors():
    from ember.compile.capture import trace
    from ember.compile.ir import IRGraph

    g = IRGraph.from_traced(trace(lambda x: x.exp() + 1, (ember.ones(2),), {}))
    src = graph_dot(g, name="plain")
    assert src.startswith("digraph plain {") and "cluster" not in src and "n1 -> n2;" in src
    with pytest.raises(RuntimeError, match="call it once first"):
        compiled_dot(ember.compile(lambda x: x + 1))


def test_ember_graph_cli_writes_dot_and_svg(tmp_path, capsys):
    assert cli_main(["graph", "--model", "mlp", "--format", "dot", "--out", str(tmp_path / "m")]) == 0
    src = (tmp_path / "m.dot").read_text()
    assert src.startswith("digraph compiled {") and "linear" in src
    out = capsys.readouterr().out
    assert "mlp:" in out and "forward ops" in out and "wrote" in out
    if shutil.which("dot"):
        assert cli_main(["graph", "--model", "lstm", "--out", str(tmp_path / "l")]) == 0
        assert (tmp_path / "l.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        assert "recurrent_sequence" in (tmp_path / "l.dot").read_text()
