"""Tests for ember.viz: forward/backward graph DOT text, rendering, determinism, deep graphs."""

from __future__ import annotations

import re
import shutil
import sys

import pytest
import torch

import ember
from ember import viz

_VERTEX = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"[^\]]*fillcolor="([^"]+)"\];$')
_EDGE = re.compile(r"^\s*(n\d+) -> (n\d+);$")


def parse(dot: str):
    """(labels, fills, edges, clusters) of DOT text that ember.viz wrote."""
    labels, fills, edges, clusters, current = {}, {}, [], {}, None
    for line in dot.splitlines():
        if line.strip().startswith("subgraph cluster_"):
            current = line.split("cluster_")[1].split()[0]
            clusters[current] = set()
        elif line.strip() == "}":
            current = None
        elif m := _VERTEX.match(line):
            labels[m[1]] = m[2].split("\\n")
            fills[m[1]] = m[3]
            if current:
                clusters[current].add(m[1])
        elif m := _EDGE.match(line):
            edges.append((m[1], m[2]))
    return labels, fills, edges, clusters


def named_edges(dot: str) -> set:
    labels, _, edges, _ = parse(dot)
    return {(labels[a][0], labels[b][0]) for a, b in edges}


def lecture(lib):
    x1 = lib.tensor(2.0, requires_grad=True)
    x2 = lib.tensor(5.0, requires_grad=True)
    return x1, x2, lib.log(x1) + x1 * x2 - lib.sin(x2)


def torch_ops(t) -> list:
    """Op names of a torch graph, iteratively, as ember names them (``MulBackward0`` -> ``Mul``)."""
    names, seen, stack = [], set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen or fn.name() == "torch::autograd::AccumulateGrad":
            continue
        seen.add(id(fn))
        names.append(re.sub(r"Backward\d*$", "", fn.name()))
        stack.extend(f for f, _ in fn.next_functions)
    return sorted(names)


def test_forward_lecture_example():
    x1, x2, f = lecture(ember)
    dot = viz.forward_dot(f, params={"x1": x1, "x2": x2})
    assert dot.startswith("digraph forward {")
    labels, fills, _, _ = parse(dot)
    ops = sorted(lab[0] for k, lab in labels.items() if fills[k] != "lightblue")
    assert ops == torch_ops(lecture(torch)[2]) == ["Add", "Log", "Mul", "Sin", "Sub"]
    assert named_edges(dot) == {
        ("x1", "Log"),
        ("x1", "Mul"),
        ("x2", "Mul"),
        ("x2", "Sin"),
        ("Log", "Add"),
        ("Mul", "Add"),
        ("Add", "Sub"),
        ("Sin", "Sub"),
    }
    leaves = {lab[0]: lab for k, lab in labels.items() if fills[k] == "lightblue"}
    assert leaves == {"x1": ["x1", "()"], "x2": ["x2", "()"]}
    root = [lab for lab in labels.values() if "output" in lab]
    assert root == [["Sub", "()", "output"]]


def test_forward_shapes_dtypes_and_constants():
    w = ember.randn(3, 4, dtype=ember.float64, requires_grad=True)
    x = ember.ones(2, 3, dtype=ember.float64)
    y = (x @ w * 2).relu().sum(dim=1)
    labels, fills, _, _ = parse(viz.forward_dot(y, params=[("weight", w)]))
    by_title = {lab[0]: lab for lab in labels.values()}
    assert by_title["weight"] == ["weight", "(3, 4) float64"]
    assert by_title["Matmul"][1] == "(2, 4) float64"
    assert by_title["Sum"][1:] == ["(2,) float64", "output"]
    assert by_title["const"] == ["const", "(2, 3) float64"]  # x: a tensor that needs no grad
    assert "2" in by_title  # the Python number the Mul used
    # unnamed leaves show their shape only; float32 shows no dtype
    a = ember.zeros(5, requires_grad=True)
    labels, _, _, _ = parse(viz.forward_dot(a.exp()))
    assert ["(5,)"] in labels.values()


def test_backward_lecture_example():
    x1, x2, f = lecture(ember)
    dot = viz.backward_dot(f, params={"x1": x1, "x2": x2})
    assert dot.startswith("digraph backward {")
    labels, fills, edges, clusters = parse(dot)
    titles = [lab[0] for lab in labels.values()]
    assert "Div" in titles  # d ln(x1) = 1 / x1
    assert "Cos" in titles  # d sin(x2) = cos(x2)
    grads = {lab[-1]: lab for lab in labels.values() if lab[-1].startswith("grad ")}
    assert set(grads) == {"grad x1", "grad x2"}
    assert all(fills[k] == "lightsalmon" for k, lab in labels.items() if lab[0] in ("Div", "Cos"))
    # the forward leaves are drawn as forward values, feeding the gradient ops
    forward = {labels[k][0] for k in clusters["forward"]}
    assert forward == {"x1", "x2"}
    assert ("x1", "Div") in named_edges(dot) and ("x2", "Cos") in named_edges(dot)
    assert ("grad output", "Div") in named_edges(dot)  # the seed gradient (ones) is named
    # the drawing's gradients are the real ones: compare with torch on the same inputs
    t1, t2, tf = lecture(torch)
    g1, g2 = torch.autograd.grad(tf, (t1, t2))
    e1, e2 = ember.autograd.grad(f, (x1, x2))
    assert abs(e1.item() - g1.item()) < 1e-6 and abs(e2.item() - g2.item()) < 1e-6


def test_backward_marks_forward_values_it_reads():
    x = ember.tensor([0.5, 1.0, 2.0], requires_grad=True)
    y = x.exp().sum()  # d exp reads exp's own output: a forward value in the backward graph
    labels, fills, _, clusters = parse(viz.backward_dot(y, params={"x": x}))
    forward = {labels[k][0]: k for k in clusters["forward"]}
    assert set(forward) == {"Exp", "x"}
    assert fills[forward["Exp"]] == "lightgrey"


def test_backward_inputs_and_side_effects():
    a = ember.randn(2, 3, requires_grad=True)
    b = ember.randn(2, 3, requires_grad=True)
    out = a * b + a  # non-scalar: differentiated as out.sum()
    dot = viz.backward_dot(out, inputs=[b], params={"a": a, "b": b})
    grads = [lab for lab in parse(dot)[0].values() if lab[-1].startswith("grad ")]
    assert [g[-1] for g in grads] == ["grad b"]
    assert a.grad is None and b.grad is None
    out.sum().backward()  # the forward graph is still usable
    torch_a = torch.tensor(a.detach().numpy(), requires_grad=True)
    (torch_a * torch.tensor(b.detach().numpy()) + torch_a).sum().backward()
    assert torch.allclose(torch.tensor(a.grad.numpy()), torch_a.grad)


def test_backward_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        viz.backward_dot(ember.ones(3) * 2)
    with pytest.raises(TypeError):
        viz.forward_dot([1, 2])


def test_deterministic():
    def build():
        x1, x2, f = lecture(ember)
        return viz.forward_dot(f), viz.backward_dot(f)

    x1, x2, f = lecture(ember)
    assert viz.forward_dot(f) == viz.forward_dot(f)
    assert viz.backward_dot(f) == viz.backward_dot(f)
    assert build() == build()  # fresh tensors (other ids) give the same text


def test_deep_chain_is_iterative():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(2500):  # 5000 ops in a row
        y = (y * 0.5).sin()
    assert sys.getrecursionlimit() < 5000  # the walk would overflow if it recursed
    labels, _, edges, _ = parse(viz.forward_dot(y.sum()))
    assert sum(lab[0] == "Mul" for lab in labels.values()) == 2500
    assert sum(lab[0] == "Sin" for lab in labels.values()) == 2500
    assert len(labels) == 5000 + 2500 + 2 and len(edges) == len(labels) - 1  # ops, 0.5s, Sum, x: a tree
    labels, fills, _, _ = parse(viz.backward_dot(y.sum(), params={"x": x}))
    assert sum(lab[0] == "Cos" and fills[k] == "lightsalmon" for k, lab in labels.items()) == 2500
    # cos reads each Sin's input, so every forward Mul is drawn, and every Sin but the last
    assert sum(lab[0] == "Sin" and fills[k] == "lightgrey" for k, lab in labels.items()) == 2499


def test_render_dot_and_unknown_format(tmp_path):
    src = viz.forward_dot(lecture(ember)[2])
    out = viz.render(src, tmp_path / "g.dot")
    assert out == tmp_path / "g.dot" and out.read_text() == src
    with pytest.raises(ValueError, match="unknown format"):
        viz.render(src, tmp_path / "g.bmp")


def test_render_without_dot_program(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    src = viz.backward_dot(lecture(ember)[2])
    with pytest.warns(RuntimeWarning, match="'dot' program was not found"):
        out = viz.render(src, tmp_path / "g.svg")
    assert out == tmp_path / "g.dot" and out.read_text() == src
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' program is not installed")
def test_render_svg_and_png(tmp_path):
    x1, x2, f = lecture(ember)
    svg = viz.render(viz.backward_dot(f, params={"x1": x1, "x2": x2}), tmp_path / "b.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "Cos" in text
    png = viz.render(viz.forward_dot(f), tmp_path / "f.img", format="png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
