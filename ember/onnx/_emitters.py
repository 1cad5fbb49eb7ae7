"""One table: captured primitive name -> the function that writes its ONNX nodes.

An emitter gets the :class:`~ember.onnx._build.Builder` and the :class:`OpRecord` and writes
nodes whose outputs are named ``b.out(rec, i)``. Shapes come from ``b.shape(vid)``, which keeps
dims that follow a dynamic axis symbolic, so reshape targets and factory shapes are computed in
the graph rather than baked in.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from ember.onnx._build import _is_ref, np_dtype, onnx_type
from ember.onnx.errors import UnsupportedOperatorError

__all__ = ["EMITTERS"]

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


def _i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------- elementwise
def _binary(op):
    def emit(b, rec):
        b.node(op, [b.input(rec, 0, b.dtype(rec.outputs[0])), b.input(rec, 1, b.dtype(rec.outputs[0]))], b.out(rec))

    return emit


def _unary(op):
    def emit(b, rec):
        b.node(op, [b.input(rec, 0, b.dtype(rec.outputs[0]))], b.out(rec))

    return emit


def _rsqrt(b, rec):
    b.node("Reciprocal", [b.node("Sqrt", [b.input(rec, 0)])], b.out(rec))


def _gelu(b, rec):
    x = b.input(rec, 0)
    dt = b.dtype(rec.outputs[0])

    def c(v):
        return b.const(np.array(v, dtype=dt))

    if rec.params.get("approximate", "none") == "tanh":
        cube = b.node("Mul", [b.node("Mul", [x, x]), x])
        inner = b.node("Mul", [b.node("Add", [x, b.node("Mul", [cube, c(0.044715)])]), c(math.sqrt(2 / math.pi))])
        t = b.node("Tanh", [inner])
    else:
        t = b.node("Erf", [b.node("Mul", [x, c(1 / math.sqrt(2))])])
    b.node("Mul", [b.node("Mul", [x, c(0.5)]), b.node("Add", [t, c(1.0)])], b.out(rec))


def _softmax(op):
    def emit(b, rec):
        b.node(op, [b.input(rec, 0)], b.out(rec), axis=int(rec.params["dim"]))

    return emit


def _compare(op):
    def emit(b, rec):
        # Operands of different dtypes compare in the dtype of the higher-rank one (a 0-d tensor
        # or a number does not promote, as in PyTorch).
        a, c = rec.inputs[0], rec.inputs[1]
        ranks = [len(b.value(v).shape) if _is_ref(v) else -1 for v in (a, c)]
        src = a if ranks[0] >= ranks[1] else c
        dt = b.dtype(src)
        b.node(op, [b.input(rec, 0, dt), b.input(rec, 1, dt)], b.out(rec))

    return emit


def _ne(b, rec):
    _compare("Equal")(b, rec)
    out = b.nodes[-1].output[0]
    b.nodes[-1].output[0] = tmp = b.fresh("eq")
    b.node("Not", [tmp], out)


def _cast(b, rec):
    b.node("Cast", [b.input(rec, 0)], b.out(rec), to=onnx_type(b.value(rec.outputs[0]).dtype))


# --------------------------------------------------------------------------- shapes and movement
def _reshape(b, rec):
    b.node("Reshape", [b.input(rec, 0), b.shape_tensor(b.shape(rec.outputs[0]))], b.out(rec))


def _identity(b, rec):
    b.node("Identity", [b.input(rec, 0)], b.out(rec))


def _permute(b, rec):
    b.node("Transpose", [b.input(rec, 0)], b.out(rec), perm=[int(d) for d in rec.params["dims"]])


def _expand(b, rec):
    b.node("Expand", [b.input(rec, 0), b.shape_tensor(b.shape(rec.outputs[0]))], b.out(rec))


def _cat(b, rec):
    dt = b.dtype(rec.outputs[0])
    ins = [b.input(rec, i, dt) for i in range(len(rec.inputs))]
    b.node("Concat", ins, b.out(rec), axis=int(rec.params["axis"]))


def _getitem(b, rec):
    """Basic indexing: ints, slices, None and Ellipsis."""
    key = rec.params["key"]
    if not rec.params.get("basic", False):
        raise _unsupported(rec, "indexing with tensors or booleans (advanced indexing)")
    key = key if isinstance(key, tuple) else (key,)
    ndim = len(b.shape(rec.inputs[0]))
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    in_ax = out_ax = 0
    slices, ints, nones = [], [], []
    for k in key:
        if k is None:
            nones.append(out_ax)
            out_ax += 1
        elif k is Ellipsis:
            in_ax += ndim - n_real
            out_ax += ndim - n_real
        elif isinstance(k, slice):
            if k != slice(None):
                slices.append((in_ax, k))
            in_ax += 1
            out_ax += 1
        else:
            ints.append((in_ax, int(k)))
            in_ax += 1
    x = b.input(rec, 0)
    if slices:
        starts, ends, axes, steps = [], [], [], []
        for ax, s in slices:
            step = 1 if s.step is None else int(s.step)
            starts.append((0 if step > 0 else -1) if s.start is None else int(s.start))
            ends.append((_I64_MAX if step > 0 else _I64_MIN) if s.stop is None else int(s.stop))
            axes.append(ax)
            steps.append(step)
        x = b.node("Slice", [x, b.const(_i64(starts)), b.const(_i64(ends)), b.const(_i64(axes)), b.const(_i64(steps))])
    for ax, i in sorted(ints, reverse=True):
        x = b.node("Gather", [x, b.const(np.array(i, dtype=np.int64))], axis=ax)
    if nones:
        x = b.node("Unsqueeze", [x, b.const(_i64(nones))])
    b.node("Identity", [x], b.out(rec))


# --------------------------------------------------------------------------- factories
def _full(b, rec):
    dt = np_dtype(b.value(rec.outputs[0]).dtype)
    value = helper.make_tensor("value", onnx_type(dt), [1], [np.asarray(rec.params["value"], dtype=dt).item()])
    b.node("ConstantOfShape", [b.shape_tensor(b.shape(rec.outputs[0]))], b.out(rec), value=value)


def _arange(b, rec):
    p = rec.params
    if len(b.shape(rec.outputs[0])) != 1 or not isinstance(b.shape(rec.outputs[0])[0], int):
        raise _unsupported(rec, "a length that depends on a dynamic axis")
    a = p["start"] + p["step"] * np.arange(p["n"])
    b.node("Identity", [b.const(a.astype(b.dtype(rec.outputs[0])))], b.out(rec))


# --------------------------------------------------------------------------- reductions
def _sum(b, rec):
    axes = rec.params.get("axes")
    ins = [b.input(rec, 0, b.dtype(rec.outputs[0]))]
    if axes is not None:
        ins.append(b.const(_i64(list(axes))))
    b.node("ReduceSum", ins, b.out(rec), keepdims=int(bool(rec.params.get("keepdim", False))))


def _cumsum(b, rec):
    x = b.input(rec, 0, b.dtype(rec.outputs[0]))
    b.node("CumSum", [x, b.const(np.array(int(rec.params["axis"]), dtype=np.int64))], b.out(rec))


def _argsort(b, rec):
    axis = rec.params["axis"]
    if axis is None:
        raise _unsupported(rec, "a 0-d input")
    size = b.shape(rec.inputs[0])[axis]
    k = b.shape_tensor([size])
    largest = int(bool(rec.params.get("descending", False)))
    # TopK over the whole axis is a sort; equal values keep index order, as a stable sort does.
    b.node("TopK", [b.input(rec, 0), k], [b.fresh("sorted"), b.out(rec)], axis=int(axis), largest=largest, sorted=1)


def _topk_indices(b, rec):
    p = rec.params
    k = b.const(np.array([int(p["k"])], dtype=np.int64))
    outs = [b.fresh("topk"), b.out(rec)]
    b.node("TopK", [b.input(rec, 0), k], outs, axis=int(p["axis"]), largest=int(bool(p["largest"])), sorted=1)


def _gather(b, rec):
    b.node("GatherElements", [b.input(rec, 0), b.input(rec, 1, np.int64)], b.out(rec), axis=int(rec.params["axis"]))


# --------------------------------------------------------------------------- nn
def _linear(b, rec):
    wt = b.node("Transpose", [b.input(rec, 1)], perm=[1, 0])
    if len(rec.inputs) > 2 and rec.inputs[2] is not None:
        y = b.node("MatMul", [b.input(rec, 0), wt])
        b.node("Add", [y, b.input(rec, 2)], b.out(rec))
    else:
        b.node("MatMul", [b.input(rec, 0), wt], b.out(rec))


def _matmul(b, rec):
    b.node("MatMul", [b.input(rec, 0), b.input(rec, 1)], b.out(rec))


def _conv2d(b, rec):
    g = rec.params["geom"]
    pt, pb, pl, pr = g.pad
    ins = [b.input(rec, 0), b.input(rec, 1)]
    if len(rec.inputs) > 2 and rec.inputs[2] is not None:
        ins.append(b.input(rec, 2))
    b.node(
        "Conv",
        ins,
        b.out(rec),
        strides=list(g.stride),
        pads=[pt, pl, pb, pr],
        dilations=list(g.dilation),
        group=int(g.groups),
    )


def _embedding(b, rec):
    b.node("Gather", [b.input(rec, 0), b.input(rec, 1)], b.out(rec), axis=0)  # (weight, indices)


def _layer_norm(b, rec):
    axes = rec.params["axes"]
    x = b.input(rec, 0)
    norm_shape = [int(d) for d in b.value(rec.inputs[0]).shape[axes[0] :]]
    dt = b.dtype(rec.outputs[0])
    w = b.input(rec, 1) if len(rec.inputs) > 1 and rec.inputs[1] is not None else b.const(np.ones(norm_shape, dt))
    ins = [x, w]
    if len(rec.inputs) > 2 and rec.inputs[2] is not None:
        ins.append(b.input(rec, 2))
    b.node("LayerNormalization", ins, b.out(rec), axis=int(axes[0]), epsilon=float(rec.params["eps"]))


def _sdpa(b, rec):
    spec = rec.params["spec"]
    if spec.drop is not None:
        raise _unsupported(rec, "dropout_p > 0 (export the model in eval mode)")
    if spec.rep != 1:
        raise _unsupported(rec, "grouped-query attention (enable_gqa)")
    dt = b.dtype(rec.outputs[0])
    q, k, v = (b.input(rec, i) for i in range(3))
    kt = b.node("Transpose", [k], perm=_swap_last(len(b.shape(rec.inputs[1]))))
    s = b.node("Mul", [b.node("MatMul", [q, kt]), b.const(np.array(spec.scale, dtype=dt))])
    if spec.mask_is_input:
        s = b.node("Add", [s, b.input(rec, 3)])
    if spec.bool_mask is not None:
        if not isinstance(spec.bool_mask, np.ndarray):
            raise _unsupported(rec, "a boolean attn_mask given as a model input")
        s = b.node("Add", [s, b.const(np.where(spec.bool_mask, 0.0, -np.inf).astype(dt))])
    p = b.node("Softmax", [s], axis=-1)
    b.node("MatMul", [p, v], b.out(rec))


def _swap_last(n: int) -> list:
    perm = list(range(n))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return perm


def _recurrent_sequence(b, rec):
    """An LSTM direction as an ONNX Scan: the state is ``[h | c]``, each step's output too."""
    if rec.params["kind"] != "LSTM":
        raise _unsupported(rec, f"{rec.params['kind']} cells (only LSTM is exported)")
    w_hh = rec.inputs[2]
    has_b = len(rec.inputs) > 3 and rec.inputs[3] is not None
    hsz = int(b.value(w_hh).shape[1])
    dt = b.dtype(rec.outputs[0])
    wt = b.node("Transpose", [b.input(rec, 2)], perm=[1, 0])  # outer scope: the body reads it
    bias = b.input(rec, 3) if has_b else None
    outer_nodes = b.nodes
    b.nodes = []
    s_in, x_in = b.fresh("state"), b.fresh("gi")
    h = b.node("Slice", [s_in, b.const(_i64([0])), b.const(_i64([hsz])), b.const(_i64([1]))])
    c = b.node("Slice", [s_in, b.const(_i64([hsz])), b.const(_i64([2 * hsz])), b.const(_i64([1]))])
    gates = b.node("Add", [x_in, b.node("MatMul", [h, wt])])
    if bias is not None:
        gates = b.node("Add", [gates, bias])
    i, f, g, o = b.node("Split", [gates, b.const(_i64([hsz] * 4))], 4, axis=1)
    c2 = b.node(
        "Add",
        [b.node("Mul", [b.node("Sigmoid", [f]), c]), b.node("Mul", [b.node("Sigmoid", [i]), b.node("Tanh", [g])])],
    )
    h2 = b.node("Mul", [b.node("Sigmoid", [o]), b.node("Tanh", [c2])])
    s_out = b.node("Concat", [h2, c2], axis=1)
    y = b.node("Identity", [s_out])
    body_nodes, b.nodes = b.nodes, outer_nodes
    et = onnx_type(dt)
    body = helper.make_graph(
        body_nodes,
        b.fresh("lstm_body"),
        [helper.make_tensor_value_info(s_in, et, None), helper.make_tensor_value_info(x_in, et, None)],
        [helper.make_tensor_value_info(s_out, et, None), helper.make_tensor_value_info(y, et, None)],
    )
    rev = 1 if rec.params.get("reverse") else 0
    b.node(
        "Scan",
        [b.input(rec, 1), b.input(rec, 0)],
        [b.fresh("final"), b.out(rec)],
        body=body,
        num_scan_inputs=1,
        scan_input_directions=[rev],
        scan_output_directions=[rev],
    )


def _unsupported(rec, what: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(f"ember.onnx.export: cannot export '{rec.op}' with {what}")


EMITTERS: dict = {
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "div": _binary("Div"),
    "neg": _unary("Neg"),
    "relu": _unary("Relu"),
    "exp": _unary("Exp"),
    "log": _unary("Log"),
    "sqrt": _unary("Sqrt"),
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "abs": _unary("Abs"),
    "ceil": _unary("Ceil"),
    "floor": _unary("Floor"),
    "rsqrt": _rsqrt,
    "eq": _compare("Equal"),
    "ne": _ne,
    "lt": _compare("Less"),
    "le": _compare("LessOrEqual"),
    "gt": _compare("Greater"),
    "ge": _compare("GreaterOrEqual"),
    "to": _cast,
    "cumsum": _cumsum,
    "argsort": _argsort,
    "topk_indices": _topk_indices,
    "gather": _gather,
    "gelu": _gelu,
    "softmax": _softmax("Softmax"),
    "log_softmax": _softmax("LogSoftmax"),
    "reshape": _reshape,
    "view": _reshape,
    "contiguous": _identity,
    "clone": _identity,
    "permute": _permute,
    "expand": _expand,
    "cat": _cat,
    "getitem": _getitem,
    "full": _full,
    "arange": _arange,
    "sum": _sum,
    "linear": _linear,
    "matmul": _matmul,
    "conv2d": _conv2d,
    "embedding": _embedding,
    "layer_norm": _layer_norm,
    "scaled_dot_product_attention": _sdpa,
    "recurrent_sequence": _recurrent_sequence,
}
