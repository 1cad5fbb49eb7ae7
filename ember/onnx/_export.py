"""``export``: capture, translate each primitive through the emitter table, check, write."""

from __future__ import annotations

import os

import numpy as np

from ember.nn.modules.module import Module
from ember.onnx.errors import UnsupportedOperatorError
from ember.tensor import Tensor

__all__ = ["export", "UnsupportedOperatorError"]


def _emitters():
    try:
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("ember.onnx.export needs the 'onnx' package: pip install ember[onnx]") from e
    from ember.onnx import _emitters

    return _emitters


def _dyn_by_position(dynamic_axes, input_names, output_names, n_in):
    """``{input position: {axis: name}}`` and ``{output position: {axis: name}}``."""
    dynamic_axes = dynamic_axes or {}
    ins, outs = {}, {}
    for key, axes in dynamic_axes.items():
        if isinstance(axes, (list, tuple)):  # PyTorch: a list of axes gets generated names
            axes = {int(a): f"{key}_dynamic_axes_{i + 1}" for i, a in enumerate(axes)}
        axes = {int(a): str(n) for a, n in axes.items()}
        if key in input_names:
            ins[input_names.index(key)] = axes
        elif key in output_names:
            outs[output_names.index(key)] = axes
        else:
            raise ValueError(f"ember.onnx.export: dynamic_axes names '{key}', which is not an input or output name")
    return ins, outs


def export(
    model,
    args,
    f,
    export_params: bool = True,
    verbose: bool = False,
    input_names: list | None = None,
    output_names: list | None = None,
    opset_version: int | None = 17,
    dynamic_axes: dict | None = None,
    do_constant_folding: bool = True,
    training=None,
    dynamo: bool = False,
) -> None:
    """Export ``model`` run on ``args`` to ONNX, written to ``f`` (a path or a binary file).

    ``dynamic_axes`` maps an input or output name to ``{axis: name}`` (or a list of axes): those
    dims stay symbolic, and shapes the graph computes from them (reshape targets, ``zeros`` of the
    batch size) are computed at run time. Raises :class:`UnsupportedOperatorError` naming the op
    when a captured primitive has no ONNX form. The model is exported in eval mode (PyTorch's
    default ``training=TrainingMode.EVAL``) and its mode restored. Not supported:
    ``export_params=False``, ``training`` other than eval, ``dynamo=True``; ``do_constant_folding``
    is accepted and has no effect (parameters are already initializers).

    Example:
        >>> import io, ember, ember.nn as nn
        >>> f = io.BytesIO()
        >>> ember.onnx.export(nn.Linear(4, 2), (ember.randn(3, 4),), f)
    """
    em = _emitters()
    import onnx
    from onnx import helper, numpy_helper

    from ember.onnx._build import Builder, onnx_type
    from ember.onnx._trace import SymDim, dynamic_dims, trace

    if not export_params:
        raise NotImplementedError("ember.onnx.export: export_params=False is not supported")
    if training is not None and str(getattr(training, "name", training)).upper() != "EVAL":
        raise NotImplementedError(f"ember.onnx.export: training={training} is not supported (only eval mode)")
    if dynamo:
        raise NotImplementedError("ember.onnx.export: dynamo=True is not supported; Ember exports from its capture")
    if opset_version is None:
        opset_version = 17
    if opset_version < 17:
        raise ValueError(f"ember.onnx.export: opset_version {opset_version} < 17 is not supported (LayerNormalization)")
    args = (args,) if isinstance(args, Tensor) else tuple(args)
    if args and isinstance(args[-1], dict):
        raise NotImplementedError("ember.onnx.export: keyword arguments in args are not supported")
    was_training = isinstance(model, Module) and model.training
    if isinstance(model, Module):
        model.eval()  # as PyTorch's default (training=TrainingMode.EVAL): no dropout, running stats
    try:
        graph, sources, in_ids, out_ids = trace(model, args)
        input_names = list(input_names or [])
        input_names += [f"input_{i}" for i in range(len(input_names), len(args))]
        output_names = list(output_names or [])
        output_names += [f"output_{i}" for i in range(len(output_names), len(out_ids))]
        dyn_in, dyn_out = _dyn_by_position(dynamic_axes, input_names, output_names, len(args))
        sym = dynamic_dims(model, args, graph, dyn_in) if dyn_in else {}
    finally:
        if isinstance(model, Module):
            model.train(was_training)

    axis_sources = {}
    for pos, axes in dyn_in.items():
        for ax, n in axes.items():
            axis_sources.setdefault(n, (input_names[pos], ax))
    b = Builder(graph, sym, axis_sources)
    param_names = {}
    if isinstance(model, Module):
        for n, t in list(model.named_parameters()) + list(model.named_buffers()):
            param_names.setdefault(id(t), n)

    # Graph inputs are the model's arguments; every other captured input is a parameter, buffer
    # or constant tensor: an initializer holding its real value.
    arg_ids = set(in_ids)
    for vid in graph.inputs:
        if vid in arg_ids:
            continue
        src = sources.get(vid)
        if src is None or src._device.type == "meta":
            raise RuntimeError(
                "ember.onnx.export: a tensor on the meta device has no values to write; build the model on cpu"
            )
        name = param_names.get(id(src))
        if name is not None and name not in b.aliases.values():
            b.aliases[vid] = name  # initializers carry the parameter's name, as in PyTorch
        b.initializers.append(numpy_helper.from_array(np.asarray(src.detach().numpy()), b.name(vid)))

    for rec in graph.ops:
        emit = em.EMITTERS.get(rec.op)
        if emit is None and rec.op.endswith("_") and rec.prim.inplace:
            emit = em.EMITTERS.get(rec.op[:-1])  # an in-place op is its out-of-place form in SSA
        if emit is None:
            raise UnsupportedOperatorError(
                f"ember.onnx.export: exporting the operator '{rec.op}' to ONNX opset version {opset_version} "
                "is not supported"
            )
        emit(b, rec)

    def info(name, vid, axes):
        shape = []
        for d, size in enumerate(b.shape(vid)):
            if d in axes:
                shape.append(axes[d])
            elif isinstance(size, SymDim):
                shape.append(None)
            else:
                shape.append(int(size))
        return helper.make_tensor_value_info(name, onnx_type(b.value(vid).dtype), shape)

    inputs = [info(n, vid, dyn_in.get(i, {})) for i, (n, vid) in enumerate(zip(input_names, in_ids))]
    # Names: the arguments and results get the user's names through Identity nodes (runtimes
    # remove them), so the captured values keep theirs.
    for n, vid in zip(input_names, in_ids):
        b.nodes.insert(0, helper.make_node("Identity", [n], [b.name(vid)]))
    outputs = []
    for i, (n, vid) in enumerate(zip(output_names, out_ids)):
        b.node("Identity", [b.name(vid)], n)
        outputs.append(info(n, vid, dyn_out.get(i, {})))

    g = helper.make_graph(b.nodes, type(model).__name__, inputs, outputs, b.initializers)
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset_version)], producer_name="ember", ir_version=8
    )
    onnx.checker.check_model(m)
    data = m.SerializeToString()
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as fh:
            fh.write(data)
    else:
        f.write(data)
    if verbose:
        print(helper.printable_graph(m.graph))
