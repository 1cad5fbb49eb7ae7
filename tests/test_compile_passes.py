"""The compiler's IR and passes, each shown to change what it should and nothing else, and the
generated C and CUDA source (every CUDA kernel must compile with NVRTC)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember
from ember.compile.capture import trace
from ember.compile.ir import IRGraph
from ember.compile.lower import schedule
from ember.compile.passes import cse, dce, fold_constants, fuse, run_passes, simplify
from ember.compile.runtime import build_kernels, execute, render_cuda


def graph_of(fn, *args):
    return IRGraph.from_traced(trace(fn, args, {}))


def run(graph, *args, groups=()):
    """Execute ``graph`` on ``args`` (optionally with fused groups) and return its outputs."""
    env = {}
    for n in graph.nodes:
        if n.kind == "placeholder":
            kind, ref = n.binding
            env[n] = args[ref] if kind == "arg" else ref
    kernels = dict(enumerate(build_kernels(list(groups))))
    execute(schedule(graph, list(groups)), kernels, env)
    return [env[o].numpy() for o in graph.outputs]


def same_results(fn, *args, passes=()):
    g = graph_of(fn, *args)
    before = run(g, *args)
    for p in passes:
        p(g)
    after = run(g, *args)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    return g


X = ember.randn(4, 6)


def test_ir_prints_as_code_with_counts():
    g = graph_of(lambda x: (x * 2).relu().sum(dim=1), X)
    text = str(g)
    assert text.splitlines()[0] == "def graph(%0: float32[4, 6]):"
    assert "%1: float32[4, 6] = mul(%0, 2)" in text and "sum(%2, axes=(1,)" in text
    assert text.splitlines()[-1] == "    return (%3,)"
    assert g.counts() == {"mul": 1, "relu": 1, "sum": 1}


def test_dce_removes_only_unused_pure_ops():
    def f(x):
        unused = (x * 3).exp()  # noqa: F841 - dead
        return x + 1

    g = same_results(f, X, passes=[dce])
    assert g.counts() == {"add": 1}
    assert dce(g) == 0  # a fixed point


def test_dce_keeps_random_and_in_place_ops():
    def f(x, buf):
        ember.rand(3)  # unused, but it advances the generator
        buf.add_(1)  # unused result, but it writes buf
        return x * 2

    g = graph_of(f, X, ember.zeros(3))
    assert dce(g) == 0
    assert g.counts() == {"rand": 1, "add_": 1, "mul": 1}


def test_cse_merges_repeats_only():
    def f(x):
        return (x * 2).exp() + (x * 2).exp() + (x * 3).exp()

    g = same_results(f, X, passes=[cse, dce])
    assert g.counts() == {"mul": 2, "exp": 2, "add": 2}


def test_cse_never_merges_random_draws():
    g = graph_of(lambda x: x + ember.rand(4, 6) - ember.rand(4, 6), X)
    assert cse(g) == 0 and g.counts()["rand"] == 2


def test_constant_folding():
    def f(x):
        return x + ember.ones(4, 6) * 2 - ember.arange(6.0)

    g = same_results(f, X, passes=[fold_constants, dce])
    assert g.counts() == {"add": 1, "sub": 1}
    assert sum(n.kind == "constant" for n in g.nodes) == 2


def test_folding_never_touches_inputs_or_parameters():
    w = ember.ones(6)
    g = graph_of(lambda x: x * (w * 2), X)
    assert fold_constants(g) == 0


def test_simplify_identities():
    def f(x):
        return ((x * 1 + 0) - 0) / 1

    g = same_results(f, X, passes=[simplify, dce])
    assert g.counts() == {} and g.outputs[0].kind == "placeholder"


def test_simplify_keeps_promoting_and_broadcasting_identities():
    xi = ember.arange(6).reshape(2, 3)  # int64: x * 1.0 is float, not x
    g = graph_of(lambda x: x * 1.0, xi)
    assert simplify(g) == 0
    g = graph_of(lambda x, y: x + y * 0 + 0, ember.randn(3), ember.randn(2, 3))  # x + 0-tensor broadcasts
    simplify(g)
    assert g.counts()["add"] >= 1


def test_simplify_double_transpose_reshape_chain_and_cast():
    def f(x):
        return (x.T.T.reshape(24).reshape(2, 12).reshape(6, 4) + x.float().reshape(6, 4)).permute(1, 0).permute(1, 0)

    g = same_results(f, X, passes=[simplify, dce])
    c = g.counts()
    assert "permute" not in c and "to" not in c
    assert c["reshape"] == 2  # one per chain, straight from x
    assert all(a.kind == "placeholder" for n in g.nodes if n.op == "reshape" for a in n.inputs())


def test_pipeline_reaches_fixed_point():
    g = graph_of(lambda x: (x * 1).exp() + (x + 0).exp(), X)
    changes = run_passes(g)
    assert changes["simplify"] == 2 and changes["cse"] == 1
    assert g.counts() == {"exp": 1, "add": 1}


def test_fusion_groups_vertical_chain_and_refuses_with_reasons():
    def f(x, y):
        a = (x * 2 + 1).tanh()  # chain: fused
        s = a.sum(dim=1, keepdim=True)  # a sum over trailing axes makes it a row loop
        b = a - s  # the row's sum broadcast back: a second pass of the same loop
        c = (b.exp() * 3).sigmoid()
        return c, c.cumsum(1), c.to(ember.float64) + 1  # cumsum and a cast to float64 do not fuse

    x, y = ember.randn(4, 6), ember.randn(6, 2)
    g = graph_of(f, x, y)
    msgs = []
    groups = fuse(g, log=msgs.append)
    assert [[n.op for n in gr.nodes] for gr in groups] == [
        ["mul", "add", "tanh", "sum", "sub", "exp", "mul", "sigmoid"]
    ]
    assert groups[0].kind == "row" and groups[0].level[groups[0].nodes[-1]] == 1  # runs in the second pass
    assert any("'cumsum' has no elementwise lowering" in m for m in msgs)
    assert any("to from float32 to float64 (only float32/bfloat16/float16 casts fuse)" in m for m in msgs)
    want = run(g, x, y)
    got = run(g, x, y, groups=groups)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_fusion_never_creates_a_cycle():
    def f(x):
        a = x * 2  # group candidate
        m = a.sum(dim=1, keepdim=True).expand(4, 6)  # outside, depends on a
        return (a + m).exp()  # joining a's group would need m both before and after it

    g = graph_of(f, X)
    msgs = []
    groups = fuse(g, log=msgs.append)
    assert all(len({n.op for n in gr.nodes}) for gr in groups)
    schedule(g, groups)  # raises on a cycle
    np.testing.assert_allclose(run(g, X, groups=groups)[0], f(X).numpy(), rtol=1e-6)


def test_fused_group_outputs_every_value_read_outside():
    def f(x):
        a = (x * 2).exp()
        return a.tanh() + 1, a.sum()

    g = graph_of(f, X)
    (group,) = fuse(g)
    assert [n.op for n in group.nodes] == ["mul", "exp", "tanh", "add", "sum"]
    assert [n.op for n in group.outputs] == ["add", "sum"]  # exp is read only inside
    got = run(g, X, groups=[group])
    np.testing.assert_allclose(got[0], f(X)[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[1], f(X)[1].numpy(), rtol=1e-5)


CHAINS = {
    "all_ops": lambda x: (
        ember.maximum(((x * 2 + 1 - x / 3).exp().log1p().sqrt().rsqrt().tanh().sigmoid().relu().abs()), -x)
        + ember.minimum(x.sin(), x.cos()).neg().reciprocal().expm1()
        + x.pow(2)
    ),
    "reduction": lambda x: ((x * 2).exp() - x).sum(dim=-1),
    "scalars_inf_nan": lambda x: (x * float("inf")).sigmoid() + (x + float("nan")) * 0 - (x * float("-inf")).exp(),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_every_generated_cuda_kernel_compiles_with_nvrtc(name, dtype):
    nvrtc = pytest.importorskip("ember.compile.codegen.nvrtc")
    if nvrtc.load() is None:
        pytest.skip("libnvrtc not installed (pip install nvidia-cuda-nvrtc-cu12)")
    x = ember.randn(8, 8, dtype=getattr(ember, dtype))
    g = graph_of(CHAINS[name], x)
    run_passes(g)
    groups = fuse(g)
    assert groups
    src = render_cuda(groups)
    ptx = nvrtc.compile_ptx(src)
    for gr in groups:
        assert f".entry ember_k{gr.id}(" in ptx
    # and the C rendering of the same groups matches eager
    np.testing.assert_allclose(run(g, x, groups=groups)[0], CHAINS[name](x).numpy(), rtol=1e-5, equal_nan=True)


def test_nvrtc_rejects_broken_source():
    nvrtc = pytest.importorskip("ember.compile.codegen.nvrtc")
    if nvrtc.load() is None:
        pytest.skip("libnvrtc not installed")
    with pytest.raises(nvrtc.NVRTCError, match="undefined"):
        nvrtc.compile_ptx('extern "C" __global__ void k(float* x) { x[0] = no_such_fn(x[0]); }')


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["all_ops", "reduction", "softmax", "col_mean"])
def test_cuda_kernels_launch_and_match_eager(name):
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception:
        pytest.skip("no CUDA device")
    fns = {**CHAINS, "softmax": lambda x: ember.nn.functional.softmax(x * 2, -1), "col_mean": lambda x: x.exp().mean(0)}
    x = ember.randn(1000, 37)
    g = graph_of(fns[name], x)
    run_passes(g)
    groups = fuse(g)
    assert len(groups) == 1  # the whole function is one kernel
    mod = cp.RawModule(code=render_cuda(groups))
    env = {n: x.numpy() for n in g.nodes if n.kind == "placeholder"}
    for gr in groups:
        ins = [cp.asarray(env[a]) for a in gr.inputs]
        outs = [cp.empty(o.shape, cp.float32) for o in gr.outputs]
        n = gr.numel()
        rows, cols = gr.rows_cols()
        threads = {"row": rows, "col": cols}.get(gr.kind, n)
        sizes = (cp.int64(n), cp.int64(rows), cp.int64(cols))
        mod.get_function(f"ember_k{gr.id}")(((threads + 255) // 256,), (256,), (*ins, *outs, *sizes))
        for o, arr in zip(gr.outputs, outs):
            env[o] = cp.asnumpy(arr)
    np.testing.assert_allclose(env[g.outputs[0]], fns[name](x).numpy(), rtol=1e-5, atol=1e-6)


def test_fusion_merges_independent_sibling_groups():
    def f(x):
        return ember.maximum((x * 2 + 1).relu(), (x * 0.5).exp())

    g = graph_of(f, X)
    (group,) = fuse(g)
    assert [n.op for n in group.nodes] == ["mul", "add", "relu", "mul", "exp", "maximum"]
    assert group.inputs == [g.nodes[0]] and len(group.outputs) == 1
    np.testing.assert_allclose(run(g, X, groups=[group])[0], f(X).numpy(), rtol=1e-6)


def test_reductions_fuse_with_their_producers_over_trailing_or_leading_axes():
    def f(x):
        a = (x * 2).tanh()
        return a.sum(dim=1) * 3, a.sum(dim=0), (x - 1).exp().sum(), (x.reshape(2, 2, 6) * 2).sum(dim=1)

    g = graph_of(f, X)
    msgs = []
    groups = fuse(g, log=msgs.append)
    ops = [[n.op for n in gr.nodes] for gr in groups]
    assert ops == [["mul", "tanh", "sum", "mul"], ["sub", "exp", "sum"]]  # a.sum(0) reads the row group
    assert any("the group is a row group over other axes" in m for m in msgs)
    assert any("only trailing or leading axes fuse" in m for m in msgs)  # sum(dim=1) of a 3-d tensor
    assert groups[0].rows_cols() == (4, 6) and groups[1].rows_cols() == (1, 24)
    for got, want in zip(run(g, X, groups=groups), f(X)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)


def test_reduction_of_empty_rows_is_zero():
    x = ember.ones(3, 0)
    g = graph_of(lambda x: (x * 2 + 1).sum(dim=1), x)
    groups = fuse(g)
    np.testing.assert_array_equal(run(g, x, groups=groups)[0], np.zeros(3, np.float32))


def test_gradients_through_fused_reductions():
    w = ember.randn(6, requires_grad=True)
    f = ember.compile(lambda x: ((x * w).tanh().sum(dim=1) * 2).exp().sum())
    x = ember.randn(4, 6)
    f(x).backward()
    (entry,) = f.cache.values()
    assert entry.joint and any(g.reduction is not None for k, g in entry.steps if k == "group")
    got = w.grad.numpy().copy()
    w.grad = None
    ((x * w).tanh().sum(dim=1) * 2).exp().sum().backward()
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=1e-5)


_UNARY_OPS = ["exp", "tanh", "sigmoid", "relu", "neg", "abs", "sin", "cos"]
_BINARY_OPS = ["add", "sub", "mul", "maximum", "minimum"]


@settings(max_examples=25, deadline=None)
@given(
    program=st.lists(
        st.tuples(
            st.sampled_from(_UNARY_OPS + _BINARY_OPS + ["scalar_mul", "scalar_add"]),
            st.integers(0, 50),
            st.integers(0, 50),
            st.floats(-2, 2),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_elementwise_graphs_compile_to_eager_values(program):
    """Random DAGs of elementwise ops over two inputs: compiled (passes, fusion, C) == eager."""

    def f(x, y):
        vals = [x, y]
        for op, i, j, c in program:
            a, b = vals[i % len(vals)], vals[j % len(vals)]
            if op == "scalar_mul":
                vals.append(a * c)
            elif op == "scalar_add":
                vals.append(a + c)
            elif op in _UNARY_OPS:
                vals.append(getattr(ember, op)(a))
            else:
                vals.append(getattr(ember, op)(a, b))
        return vals[-1], vals[len(vals) // 2]

    ember.manual_seed(0)
    x, y = ember.randn(5, 7), ember.randn(5, 7)
    cf = ember.compile(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = cf(x, y)
    # Up to 12 float32 ops in a row, each a few ulp apart (the generated loop's vectorized exp and
    # tanh against NumPy's): the difference compounds, so 1e-4, far below any wrong-op error.
    for a, b in zip(got, f(x, y)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
