"""Trace a Python callable into a captured :class:`~ember.ops.capture.Graph`.

The callable runs once in capture mode (``ember.ops.capture``) with the caller's real tensors:
each one that reaches an op is traced by a meta stand-in, so nothing is computed. Afterwards
every graph input is bound either to an argument (by position among the flattened tensor
arguments) or to a tensor the function reached otherwise (parameters, buffers, closures), which
is read again on every call.

Anything the graph cannot represent raises :class:`Unsupported` with the reason (data-dependent
Python such as ``.item()``, ``backward()`` inside the function, an op that ran outside the
dispatch point); the caller falls back to eager.

Example:
    >>> import ember
    >>> from ember.compile.capture import trace
    >>> t = trace(lambda x: (x * 2).relu(), (ember.ones(3),), {})
    >>> [r.op for r in t.graph.ops]
    ['mul', 'relu']
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember import _device
from ember._mode import mode
from ember._mutations import bump
from ember.autograd.node import Node as AutogradNode
from ember.backends import meta as _meta
from ember.compile.ir import IMPURE
from ember.ops import capture as _capture
from ember.ops.capture import Graph, _Tracer
from ember.random import default_generator
from ember.tensor import Tensor

__all__ = ["Unsupported", "GraphBreak", "Traced", "trace", "flatten", "unflatten", "read_reason"]


_EMBER_DIR = str(Path(__file__).resolve().parents[1]).replace("\\", "/") + "/"


class Unsupported(Exception):
    """The function cannot be captured as one graph; ``str(e)`` names the reason."""


def flatten(obj, out: list):
    """Replace each tensor in a nest of tuples/lists/dicts by a slot; collect the tensors."""
    if isinstance(obj, Tensor):
        out.append(obj)
        return ("T", len(out) - 1)
    if isinstance(obj, (tuple, list)):
        return (type(obj), [flatten(o, out) for o in obj])
    if isinstance(obj, dict):
        return (dict, [(k, flatten(v, out)) for k, v in obj.items()])
    return ("C", obj)


def unflatten(spec, values: list):
    kind, body = spec
    if kind == "T":
        return values[body]
    if kind == "C":
        return body
    if kind is dict:
        return {k: unflatten(v, values) for k, v in body}
    items = [unflatten(s, values) for s in body]
    return kind(items) if kind in (list, tuple) else kind(*items)  # namedtuples


@dataclass
class Traced:
    """A captured graph and how to connect it to a call."""

    graph: Graph
    bindings: list  # per graph input: ("arg", k) or ("const", tensor)
    out_spec: object  # the result's structure (see flatten)
    out_refs: list  # per output slot: ("value", vid) or ("arg", k) or ("const", tensor)
    # A joint trace (forward and backward): the outputs that get a gradient (value ids), the
    # gradient of each graph input that requires grad (input vid -> grad vid or None).
    diff_outputs: list = None
    input_grads: dict = None
    n_forward_ops: int = 0  # ops before this index are the forward, the rest its backward
    # A step trace (the function ran backward() itself): see effects.py and step.py.
    step: bool = False
    node_refs: dict = None  # (op index, param) -> (index of the op that made the node, attribute)
    writebacks: list = None  # ("grad", tensor, ref) and ("state", optimizer, param, key, ref)
    guard_grads: list = None  # (tensor, its .grad was None)
    opt_guards: list = None  # OptimizerGuard per stepped optimizer
    module_guards: list = None  # (module the function called or switched, its .training)
    outputs_require_grad: bool = False


class _BindingTracer(_Tracer):
    """The capture tracer. A real tensor an op reaches is turned into its own tracer in place
    (its data swapped for a meta array, restored after the trace), so the objects the program
    holds (parameters, their ``.grad``, optimizer state) are the tracers: a ``.grad`` the
    backward sets or an optimizer reads is a graph value. Remembers which caller tensor each
    graph input stands for, and which op made each autograd node (for gradient kernels that
    read their node)."""

    def __init__(self, graph, effects=None):
        super().__init__(graph)
        self.owner: dict = {}  # input value id -> the tensor the program passed to the op
        self.swapped: dict = {}  # id(tensor) -> (tensor, _data, _device, _node, _requires_grad, _vc, vc value)
        self.effects = effects
        self.node_op: dict = {}  # id(autograd node) -> index of the op whose output holds it
        self.node_refs: dict = {}  # (op index, param name) -> (autograd node, attribute or None)
        self.current_node = None  # the node whose gradient rule runs (on_backward)

    def _swap(self, x) -> None:
        vc = x._vc
        self.swapped[id(x)] = (x, x._data, x._device, x._node, x._requires_grad, vc, None if vc is None else vc[0])
        if self.effects is not None:
            self.effects.note_grad(x)
        x._traced_from = x._device  # where it lives (the optimizer's choice of kernels reads it)
        x._data = _meta.asarray(x._data)
        x._device = _capture._META

    def restore(self) -> None:
        """Give every swapped tensor back its data, device, history and version."""
        bump()  # compiled steps' guards (ember/_mutations.py)
        for x, data, dev, node, rg, vc, v in self.swapped.values():
            x._data, x._device, x._node, x._requires_grad, x._vc = data, dev, node, rg, vc
            x.__dict__.pop("_traced_from", None)
            if vc is not None:
                vc[0] = v

    def _trace(self, x):
        if isinstance(x, Tensor) and x._device.type != "meta" and id(x) not in self.stand_ins:
            vid = self.by_data.get(id(x._data))
            if vid is not None:
                # A captured op's output on a real device (a factory given device="cpu", which
                # ran: a meta copy of its shape stands in): trace it as that value, not as a new input.
                s = Tensor.__new__(Tensor)
                s._data = x._data if isinstance(x._data, _meta.MetaArray) else _meta.asarray(x._data)
                s._device = _capture._META
                s._requires_grad = x._requires_grad
                self.stand_ins[id(x)] = s
                self.keep += [x, s]
                self.ids[id(s)] = vid
                return s
            if not isinstance(x._data, _meta.MetaArray):
                self._swap(x)
        n = len(self.graph.inputs)
        t = super()._trace(x)
        if len(self.graph.inputs) > n:
            self.owner[self.graph.inputs[-1]] = x
        return t

    def on_apply(self, prim, inputs, params):
        if self.depth or threading.current_thread() is not self.thread:
            return super().on_apply(prim, inputs, params)
        rng = default_generator.np.bit_generator
        state = rng.state if prim.name in IMPURE else None
        x = inputs[0] if inputs else None
        if prim.name in ("to", "to_detached") and isinstance(x, Tensor) and x._device.type != "meta":
            if params.get("device") == x._device:  # a parameter's first op (autocast's cast): it is
                params = {**params, "device": _capture._META}  # traced as a meta stand-in, same device
        try:
            out = super().on_apply(prim, inputs, params)
        except Exception as e:
            # Its meta kernel cannot run (an output shape that depends on values, no meta
            # kernel) or the op is wrong: either way only the real values can tell.
            where = _where_frames(_called_frames(traceback.extract_tb(e.__traceback__)))
            raise GraphBreak(f"'{prim.name}' needs real values ({type(e).__name__}: {e}) (at {where})", where) from e
        if state is not None:
            rng.state = state  # a factory on a real device drew: the graph draws again when it runs
        index = len(self.graph.ops) - 1
        for t in out if isinstance(out, tuple) else (out,):
            node = getattr(t, "_node", None)
            if node is not None and not prim.inplace:
                self.node_op.setdefault(id(node), index)
                self.keep.append(node)
        node = self.current_node
        if node is not None and self.backward_depth:
            for k, v in params.items():
                if v is node:
                    self.node_refs[(index, k)] = (node, None)
                elif isinstance(v, (np.ndarray, _meta.MetaArray)):
                    attr = _attribute_holding(node, v)
                    if attr is not None:
                        self.node_refs[(index, k)] = (node, attr)
        return out

    def on_backward(self, node, grad):
        prev, self.current_node = self.current_node, node
        try:
            return super().on_backward(node, grad)
        finally:
            self.current_node = prev


def _attribute_holding(node, value):
    """The name of ``node``'s attribute that is ``value`` (state its forward saved), or None."""
    for cls in type(node).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if getattr(node, name, None) is value:
                return name
    return None


class GraphBreak(Unsupported):
    """Python read a tensor's values (``.item()``, ``if tensor:``, ``.tolist()``, ``.numpy()``,
    printing): the graph cannot continue past it. ``where`` is the user's ``file:line``."""

    def __init__(self, msg: str, where: str):
        super().__init__(msg)
        self.where = where


_READS = {
    "__bool__": "bool(tensor) (an `if` on a tensor)",
    "__repr__": "printing a tensor",
    "__array__": "np.asarray(tensor)",
    "to_host": "an op that reads a tensor argument's values (an index tensor)",
}


def read_reason(what: str) -> str:
    """The break reason for a read of kind ``what`` (a Tensor method name)."""
    return f"data-dependent Python: {_READS.get(what, f'Tensor.{what}()')} reads a tensor's values"


_capturing_thread = None


def _called_frames(extra=()) -> list:
    """The stack below the capture's entry (``trace``/``run_lazily``): the traced code's frames."""
    frames = traceback.extract_stack()[:-2] + list(extra)
    for k in range(len(frames) - 1, -1, -1):
        f = frames[k]
        if f.name in ("trace", "run_lazily") and f.filename.replace("\\", "/").startswith(_EMBER_DIR + "compile/"):
            return frames[k + 1 :]
    return frames


def _break_on_read(t, what):
    if threading.current_thread() is not _capturing_thread:
        return None  # another thread (a data loader) reads its own tensors
    where = _where_frames(_called_frames())
    raise GraphBreak(f"{read_reason(what)} (at {where})", where)


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of user code that caused it: outside ember, else in
    ember's models and layers (a compiled ember model), else the innermost frame."""
    return _where_frames(traceback.extract_tb(exc.__traceback__))


def _where_frames(frames) -> str:
    internal = tuple(_EMBER_DIR + d for d in ("ops/", "backends/", "autograd/", "compile/", "tensor.py", "_"))
    for outside_ember in (True, False):
        for f in reversed(frames):
            path = f.filename.replace("\\", "/")
            if "site-packages/" in path or path.startswith("<frozen"):
                continue
            if outside_ember and not path.startswith(_EMBER_DIR):
                return f"{f.filename}:{f.lineno}"
            if not outside_ember and not path.startswith(internal):
                return f"{f.filename}:{f.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "<unknown>"


def _grads(tracer, result) -> tuple:
    """Inside the capture: the backward of ``result`` w.r.t. every traced input that requires
    grad, with a fresh meta tensor as the gradient of each differentiable output."""
    import ember
    from ember.autograd import grad

    outs: list = []
    flatten(result, outs)
    diff = []
    for t in outs:
        if t._requires_grad and t._data.dtype.kind == "f" and id(t) in tracer.ids and all(t is not d for d in diff):
            diff.append(t)
    wrt_vids = []
    for vid in tracer.graph.inputs:
        x = tracer.owner[vid]
        t = tracer.stand_ins.get(id(x), x)
        if t._requires_grad:
            wrt_vids.append((vid, t))
    if not diff or not wrt_vids:
        return [], {}
    handler = mode.handler
    mode.handler = None  # the output gradients are new graph inputs, not captured ops
    try:
        gouts = [ember.empty(t.shape, dtype=t.dtype, device="meta") for t in diff]
    finally:
        mode.handler = handler
    tracer.grad_outputs = {id(g): k for k, g in enumerate(gouts)}
    tracer.keep += gouts
    diff_vids = [tracer.ids[id(t)] for t in diff]
    grads = grad(diff, [t for _, t in wrt_vids], grad_outputs=gouts, allow_unused=True)
    out = {}
    for (vid, _), g in zip(wrt_vids, grads):
        gv = None if g is None else tracer.ids.get(id(g), tracer.by_data.get(id(g._data)))
        if g is not None and gv is None:
            raise Unsupported("a gradient was computed outside the dispatch point")
        out[vid] = gv
    return diff_vids, out


def trace(fn, args: tuple, kwargs: dict, joint: bool = False) -> Traced:
    """Run ``fn(*args, **kwargs)`` in capture mode and bind the graph to the call.

    With ``joint``, also capture the backward of the result (see :func:`_grads`); its output
    gradients are graph inputs bound as ``("gout", k)``. A function that runs ``backward()``
    itself gives a *step* trace (``traced.step``): the gradient rules, the ``.grad`` updates and
    any optimizer update are ops of the graph, and the Python state it changes is returned as
    writebacks and guards (see ``effects.py``)."""
    from ember.compile.effects import Effects, OptimizerGuard

    if mode.handler is not None:
        raise Unsupported("another capture or a profile is active")
    arg_tensors: list = []
    flatten((args, kwargs), arg_tensors)
    if _capture._META is None:  # what capture() sets on first use: the stand-ins' device
        _capture._META = _device.device("meta")
    graph = Graph()
    effects = Effects()
    tracer = _BindingTracer(graph, effects)
    writebacks, guard_grads, opts = [], [], []
    step = False
    rng = default_generator.np.bit_generator
    rng_before = rng.state
    global _capturing_thread
    _capturing_thread = threading.current_thread()
    mode.handler, mode.backward_hook, mode.data_read = tracer.on_apply, tracer.on_backward, _break_on_read
    try:
        with effects:
            try:
                # The arguments are tracers from the start, so Python that reads their data before
                # any op (``x.tolist()``, ``print(x)``) is seen as data-dependent instead of specialized.
                stand_ins = [tracer._trace(t) for t in arg_tensors]
                args, kwargs = unflatten(flatten((args, kwargs), []), stand_ins)
                result = fn(*args, **kwargs)
                step = any(r.phase == "backward" for r in graph.ops)
                tracer.grad_outputs = {}
                n_forward = len(graph.ops)
                diff_vids, input_grads = _grads(tracer, result) if joint and not step else (None, None)
                for k, r in enumerate(graph.ops):
                    for name, v in r.params.items():
                        if isinstance(v, AutogradNode) and (k, name) not in tracer.node_refs:
                            # its state lives on the node, which backward frees: not replayable
                            raise Unsupported(f"'{r.op}' takes an autograd node as a parameter")
                writebacks, guard_grads, opts = effects.collect(lambda t: _ref(tracer, t), Unsupported)
            finally:
                bump()
                for t, before in effects.grad_before.values():
                    t._grad = before  # also when the trace failed
                for m, before in effects.modules.values():
                    m.training = before
                for opt, before in effects.opts.values():
                    for p in list(opt.state):
                        if p in before:
                            opt.state[p].clear()
                            opt.state[p].update(before[p])
                        else:
                            del opt.state[p]
    except Unsupported:
        raise
    except Exception as e:  # data-dependent Python on a tracer, or an op meta cannot run
        raise Unsupported(f"{type(e).__name__}: {e} (at {_where(e)})") from e
    finally:
        mode.handler = mode.backward_hook = mode.data_read = None
        # tensors an in-place write recorded by autograd gave new history (``p.add_(x)``, x
        # requiring grad): eager's p then has it (compile/api.py runs the function itself)
        gained = [
            x for x, _d, _dev, node, rg, _vc, _v in tracer.swapped.values()
            if x._node is not node or (not rg and x._requires_grad)
        ]  # fmt: skip
        tracer.restore()
        drew = rng.state != rng_before
        rng.state = rng_before  # the capture draws nothing: the program's random stream is eager's
    if drew:
        # Python drew random numbers outside the dispatch point (attention's dropout mask): a
        # graph would keep those values forever; lazily they are drawn on every call, in order.
        raise GraphBreak("random numbers drawn outside the dispatch point (attention dropout)", "<unknown>")
    by_id = {id(t): k for k, t in enumerate(arg_tensors)}
    grad_of = effects.grad_bindings()
    stand_in_of = {
        id(s): real for real_id, s in tracer.stand_ins.items() for real in tracer.keep if id(real) == real_id
    }
    bindings = []
    for vid in graph.inputs:
        x = tracer.owner[vid]
        if id(x) in tracer.grad_outputs:
            bindings.append(("gout", tracer.grad_outputs[id(x)]))
            continue
        if x._device.type == "meta" and id(x) in stand_in_of:
            x = stand_in_of[id(x)]
        if id(x) not in by_id and isinstance(x._data, _meta.MetaArray):
            raise Unsupported("an op ran outside the dispatch point (a tensor capture did not see being made)")
        if id(x) in by_id:
            bindings.append(("arg", by_id[id(x)]))
        elif id(x) in grad_of:  # a .grad that existed before the call: read again on every call
            bindings.append(("grad", grad_of[id(x)]))
        else:
            bindings.append(("const", x))
    outs: list = []
    out_spec = flatten(result, outs)
    outputs_require_grad = any(t._requires_grad for t in outs)
    out_refs = []
    for t in outs:
        if id(t) in by_id:
            out_refs.append(("arg", by_id[id(t)]))
        else:
            out_refs.append(_ref(tracer, t, by_id))
    node_refs = {k: (tracer.node_op.get(id(n)), a) for k, (n, a) in tracer.node_refs.items()}
    opt_guards = [OptimizerGuard(o) for o in opts]
    module_guards = [(m, t) for m, t in effects.modules.values()]
    traced = Traced(
        graph, bindings, out_spec, out_refs, diff_vids, input_grads, n_forward,
        step, node_refs, writebacks, guard_grads, opt_guards, module_guards,
    )  # fmt: skip
    traced.outputs_require_grad = outputs_require_grad
    traced.gained_grad = len(gained)
    return traced


def _ref(tracer, t, by_id=None):
    """A tensor's reference in a trace: ``("value", vid)`` for a graph value (an op's result or a
    graph input), ``("const", t)`` for a tensor no op read."""
    if id(t) in tracer.swapped or t._device.type == "meta":
        vid = tracer.ids.get(id(t))
        if vid is None:
            vid = tracer.by_data.get(id(t._data))
        if vid is None:
            raise Unsupported("the function returned or stored a tensor capture did not see being made")
        return ("value", vid)
    if id(t) in tracer.stand_ins:  # a factory's output on a real device
        return ("value", tracer.ids[id(tracer.stand_ins[id(t)])])
    return ("const", t)
