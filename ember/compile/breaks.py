"""Graph breaks: a function whose Python reads tensor values runs as graph segments and Python.

When capture meets data-dependent Python (``.item()``, ``if tensor:``, ``.tolist()``,
``.numpy()``, printing a tensor), the function cannot be one graph. It then runs in *lazy* mode
on every call: the Python function itself runs (so its side effects, such as ``print``, happen
each call), but the ops it applies are recorded on meta tracers into a pending *segment*
instead of being computed. When Python needs a value (a read as above, or an op whose output
shape depends on values, such as ``nonzero`` or ``bincount``), the pending segment runs: it is
looked up by its op signature in a cache of compiled segments (built on first sight), run on the
real tensors, and every tensor it made takes its real value in place, so the Python objects the
program holds become ordinary tensors. The value-dependent op itself runs eagerly.

A segment replays its ops in captured order with the grad mode each ran under, so autograd
history, ``.grad`` accumulation and in-place updates are eager's. Segments that neither record
history are optimized and fused like a whole graph (in-place writes are ordering constraints
there, as in compiled functions); the others run op by op.

Example:
    >>> import ember
    >>> @ember.compile
    ... def f(x):
    ...     y = (x * 2).exp()
    ...     if y.sum() > 10:  # a graph break: the segment before it runs, then Python decides
    ...         return y - 1
    ...     return y + 1
    >>> f(ember.zeros(3))
    tensor([2., 2., 2.])
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ember._device import CPU
from ember._mode import mode
from ember._mutations import bump
from ember.autograd.grad_mode import set_grad_enabled
from ember.autograd.grad_mode import state as grad_state
from ember.autograd.node import Node as AutogradNode
from ember.backends import meta as _meta
from ember.compile.capture import _BindingTracer, _called_frames, _where_frames, flatten
from ember.compile.ir import IMPURE
from ember.ops.capture import Graph, _Ref
from ember.ops.dispatch import apply, run
from ember.tensor import Tensor

__all__ = ["Segments", "run_lazily"]

RANDOM = IMPURE  # the random draws (and in-place random fills)


class _LazyTracer(_BindingTracer):
    """Records ops like the capture tracer, and the grad mode and output objects of each."""

    def __init__(self, segments):
        super().__init__(Graph())
        self.segments = segments
        self.grad_modes: list = []
        self.made: list = []  # per op: the output tensor objects the program received

    def _trace(self, x):
        if isinstance(x, Tensor) and x._device.type == "meta" and id(x) not in self.ids:
            self.segments.fix(x)  # an alias (``detach()``) of a value an earlier segment computed
        return super()._trace(x)

    def on_apply(self, prim, inputs, params):
        if self.depth:
            return run(prim, inputs, params)
        if prim.name in RANDOM:
            # Draws happen in program order, as eagerly: Python may draw too (attention dropout).
            self.segments.flush()
            return self.segments.eager(prim, inputs, params)
        try:
            out = super().on_apply(prim, inputs, params)
        except Exception:
            # The meta kernel cannot run it (an output shape that depends on values): run the
            # pending ops, then this one eagerly on the real values.
            if not any(isinstance(x, Tensor) and x._device.type == "meta" for x in inputs):
                raise
            self.segments.flush()
            self.segments.note_eager(prim)
            return self.segments.eager(prim, inputs, params)
        self.grad_modes.append(grad_state.enabled)
        results = out if isinstance(out, tuple) else (out,)
        if prim.inplace and "n_written" in params:
            results = inputs[: params["n_written"]]
            results = tuple(self.stand_ins.get(id(x), x) for x in results)
        self.made.append(tuple(t for t in results if isinstance(t, Tensor)))
        return out


class Segments:
    """One lazy call: the pending segment, its cache of compiled segments, and the autograd
    nodes its replays made (a later segment's gradient op may read one)."""

    def __init__(self, owner):
        self.owner = owner  # the CompiledFunction: its segment cache and logging
        self.tracer = _LazyTracer(self)
        self.real_nodes: dict = {}  # id(meta node) -> the node its replay recorded
        self.keep_nodes: list = []  # the meta nodes (their ids stay unique)
        self.real_arrays: dict = {}  # id(meta array) -> (meta array, the real tensor)
        self.leaves: dict = {}  # id -> tensors the segments read (their .grad may be an alias)

    def fix(self, t: Tensor) -> None:
        """Give ``t`` its real value if its meta array is one a run segment computed: tensors
        made outside ``apply`` (``detach()``, ``.data``) share the array of an op's output."""
        hit = self.real_arrays.get(id(t._data))
        if hit is not None:
            r = hit[1]
            bump()  # compiled steps' guards (ember/_mutations.py)
            t._data, t._device = r._data, r._device

    # ----- the mode's hooks -----
    def on_read(self, t, what: str):
        if threading.current_thread() is not self.tracer.thread:
            return None  # another thread (a data loader) reads its own tensors
        if isinstance(t, _meta.MetaArray):  # an op reads a pending value's data: run, then give it
            where = _where_frames(_called_frames())
            self.owner._say("graph", f"graph break at {where}: an op reads a pending value")
            self.flush()
            hit = self.real_arrays.get(id(t))
            return None if hit is None else hit[1]._device.backend.to_host(hit[1]._data)
        if t._device.type == "meta" and id(t) not in self.tracer.ids:
            self.fix(t)
        if t._device.type == "meta" or id(t) in self.tracer.swapped:
            where = _where_frames(_called_frames())
            self.owner._say("graph", f"graph break at {where}: {what} forces the pending segment")
            self.flush()

    def note_eager(self, prim) -> None:
        self.owner._say("graph", f"graph break: '{prim.name}' has value-dependent output shapes; it runs eagerly")

    def eager(self, prim, inputs, params):
        handler, hook, read = mode.handler, mode.backward_hook, mode.data_read
        mode.handler = mode.backward_hook = mode.data_read = None
        try:
            return apply(prim, *inputs, **params)
        finally:
            mode.handler, mode.backward_hook, mode.data_read = handler, hook, read

    # ----- running the pending segment -----
    def flush(self) -> None:
        tr = self.tracer
        g = tr.graph
        tr.restore()  # the swapped tensors hold their real values again
        for x, *_ in tr.swapped.values():
            self.leaves[id(x)] = x
        if g.ops:
            ins = [tr.owner[vid] for vid in g.inputs]
            for t in ins:
                if isinstance(t._data, _meta.MetaArray):
                    raise RuntimeError("ember.compile: a segment reads a tensor no op made")
            run_segment(self, g, tr, ins)
        self.tracer = _LazyTracer(self)
        self.tracer.real_nodes = self.real_nodes
        mode.handler, mode.backward_hook = self.tracer.on_apply, self.tracer.on_backward

    def replay(self, g, tr, ins) -> dict:
        """Run the segment's ops in order on real tensors; returns value id -> tensor."""
        env = dict(zip(g.inputs, ins))
        handler, hook, read = mode.handler, mode.backward_hook, mode.data_read
        mode.handler = mode.backward_hook = mode.data_read = None
        try:
            for r, grad_on, made in zip(g.ops, tr.grad_modes, tr.made):
                args = [env[a] if isinstance(a, _Ref) else a for a in r.inputs]
                params = r.params
                if any(getattr(v, "type", None) == "meta" for v in params.values()):
                    # the tracers' device, seen by gradient rules (``ones_like(loss)``): the
                    # segment runs where its inputs are, on the CPU
                    params = {k: CPU if getattr(v, "type", None) == "meta" else v for k, v in params.items()}
                if any((r.index, k) in tr.node_refs for k in params):
                    params = dict(params)
                    for k in r.params:
                        ref = tr.node_refs.get((r.index, k))
                        if ref is not None:
                            node, attr = ref
                            real = self.real_nodes.get(id(node), node)
                            params[k] = real if attr is None else getattr(real, attr)
                with set_grad_enabled(grad_on):
                    out = apply(r.prim, *args, **params)
                outs = out if isinstance(out, tuple) else (out,)
                if r.prim.inplace and "n_written" in r.params:
                    outs = args[: r.params["n_written"]]
                outs = [t for t in outs if isinstance(t, Tensor)]
                for vid, t in zip(r.outputs, outs):
                    env[vid] = t
                for m, t in zip(made, outs):
                    if m._node is not None and t._node is not None and not r.prim.inplace:
                        self.real_nodes[id(m._node)] = t._node
                        self.keep_nodes.append(m._node)
        finally:
            mode.handler, mode.backward_hook, mode.data_read = handler, hook, read
        return env


def _pure(g, tr) -> bool:
    """A segment that records no history and has only plain parameters (no arrays): it can be
    optimized, fused and cached by its signature. In-place writes are ordering constraints
    there (``fusion.order_edges``), as in compiled functions (``inplace.py``)."""
    if tr.node_refs:
        return False
    for r, made in zip(g.ops, tr.made):
        if any(m._node is not None or m._requires_grad for m in made):
            return False
        if any(_has_array(v) for v in r.params.values()):
            return False
    return True


def _has_array(v) -> bool:
    if isinstance(v, (np.ndarray, _meta.MetaArray, Tensor)):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_array(x) for x in v)
    if isinstance(v, dict):
        return any(_has_array(x) for x in v.values())
    return hasattr(v, "__slots__") and type(v).__module__.startswith("ember.") and not hasattr(v, "type")


def _live(tr) -> set:
    """Value ids of the tensors the segment made that Python still holds (beyond the tracer's
    own references): the compiled segment's outputs. The others may stay inside a fused loop."""
    held: dict = {}
    for t in tr.keep:
        held[id(t)] = held.get(id(t), 0) + 1
    for made in tr.made:
        for m in made:
            held[id(m)] = held.get(id(m), 0) + 1
    last: dict = {}  # id(tensor) -> its last value: in-place writes return the tensor again
    for made, r in zip(tr.made, tr.graph.ops):
        for m, vid in zip(made, r.outputs):
            last[id(m)] = (m, vid)
    live = set()
    for m, vid in last.values():
        if sys.getrefcount(m) - 3 > held.get(id(m), 0):  # 3: the tuple, m and the argument
            live.add(vid)
    return live


def _run_compiled(seg, g, tr, ins):
    """Run a pure segment through the cache of compiled segments; returns value id -> tensor
    for the live values (None if it cannot be compiled)."""
    from ember.compile.api import _freeze
    from ember.compile.capture import Traced
    from ember.compile.inplace import VersionCounts, aliased, write_counts
    from ember.compile.ir import IRGraph
    from ember.compile.lower import relax_views
    from ember.compile.passes import run_passes
    from ember.compile.passes.functionalize import functionalize_writes
    from ember.compile.runtime import execute

    live = sorted(_live(tr))
    try:
        ops = tuple(
            (r.prim.name, tuple(("v", int(a)) if isinstance(a, _Ref) else _freeze(("C", a)) for a in r.inputs),
             _freeze(("C", tuple(sorted(r.params.items())))), r.outputs)
            for r in g.ops
        )  # fmt: skip
        sig = (ops, tuple(g.inputs), tuple((tuple(t.shape), t.dtype) for t in ins), tuple(live), grad_state.enabled)
        hash(sig)
    except TypeError:
        return None
    owner = seg.owner
    hit = owner.segment_cache.get(sig)
    if hit is None:
        traced = Traced(g, [("arg", k) for k in range(len(g.inputs))], None, [("value", v) for v in live])
        graph = IRGraph.from_traced(traced)
        graph.write_counts = write_counts(graph)
        if graph.write_counts:
            functionalize_writes(graph)  # a chain of writes to an input: fused ops and one copy_
        run_passes(graph)
        relax_views(graph)
        (steps,), kernels = owner._fuse_and_build(graph, [graph])
        hit = owner.segment_cache[sig] = (graph, steps, kernels)
        owner._say("graph", f"compiled segment ({len(g.ops)} ops, {sum(k == 'group' for k, _ in steps)} fused groups)")
    graph, steps, kernels = hit
    env = {n: ins[n.binding[1]] for n in graph.nodes if n.kind == "placeholder"}
    versions = VersionCounts(graph.write_counts) if graph.write_counts else None
    if versions is not None and aliased(env, versions.written):
        return None  # two inputs are one memory: replayed in captured order
    handler, hook, read = mode.handler, mode.backward_hook, mode.data_read
    mode.handler = mode.backward_hook = mode.data_read = None
    try:
        before = versions.before(env) if versions is not None else None
        execute(steps, kernels, env)
        if versions is not None:
            versions.after(env, before)
    finally:
        mode.handler, mode.backward_hook, mode.data_read = handler, hook, read
    return {vid: env[o] for vid, o in zip(live, graph.outputs)}


def materialize(g, tr, env) -> None:
    """Give every tensor object the segment made its real value (data, device, history)."""
    for r, made in zip(g.ops, tr.made):
        for m, vid in zip(made, r.outputs):
            if id(m) in tr.swapped or vid not in env:
                continue  # a real tensor written in place (restored, written by the replay); or dead
            t = env[vid]
            if t is m:
                continue
            bump()
            m._data, m._device, m._node, m._requires_grad = t._data, t._device, t._node, t._requires_grad
            if t._vc is not None:
                m._vc = t._vc


def _trace_state_param(g, tr):
    """The first op whose parameter is state of the trace it cannot be replayed with, or None."""
    for r in g.ops:
        for k, v in r.params.items():
            if (r.index, k) not in tr.node_refs and isinstance(v, (AutogradNode, _meta.MetaArray)):
                return r.op
    return None


def run_segment(seg: Segments, g, tr, ins) -> None:
    """Run one segment on its real inputs and materialize what it made."""
    bad = _trace_state_param(g, tr)
    if bad is not None:
        raise RuntimeError(f"ember.compile: '{bad}' takes state of the trace as a parameter; it cannot be replayed")
    seg.owner.segments_run += 1
    env = _run_compiled(seg, g, tr, ins) if _pure(g, tr) else None
    if env is None:
        env = seg.replay(g, tr, ins)
    for r, made in zip(g.ops, tr.made):
        for m, vid in zip(made, r.outputs):
            if vid in env and id(m) not in tr.swapped and isinstance(m._data, _meta.MetaArray):
                seg.real_arrays[id(m._data)] = (m._data, env[vid])
    materialize(g, tr, env)
    for x in seg.leaves.values():  # a .grad the backward set is an alias of an op's output
        g_ = x._grad
        if g_ is not None and g_._device.type == "meta":
            seg.fix(g_)


def run_lazily(owner, fn, args, kwargs):
    """Call ``fn`` in lazy mode (see the module docstring); returns its result."""
    seg = Segments(owner)
    if mode.handler is not None:
        return fn(*args, **kwargs)
    mode.handler, mode.backward_hook, mode.data_read = seg.tracer.on_apply, seg.tracer.on_backward, seg.on_read
    try:
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            seg.flush()  # the ops before the error ran eagerly too
            raise
        seg.flush()
        outs: list = []
        flatten(result, outs)
        for t in outs:
            if t._device.type == "meta":
                seg.fix(t)
        return result
    finally:
        mode.handler = mode.backward_hook = mode.data_read = None
        seg.tracer.restore()
