"""``ember.compile``: capture a function or module, optimize the graph, fuse and run native code.

Each call is checked against guards (the shapes, dtypes, devices and ``requires_grad`` of the
tensor arguments, the other arguments' values, ``module.training``, grad mode, and the tensors the
graph reads besides its arguments, such as parameters). A guard set seen before reuses its
compiled graph; a new one recompiles, up to :data:`RECOMPILE_LIMIT` graphs per function, after
which calls run eagerly with a logged reason. Anything that cannot be compiled runs eagerly with
one warning naming the cause, or raises :class:`CompileError` under ``fullgraph=True``.

Example:
    >>> import ember
    >>> f = ember.compile(lambda x: (x * 2 + 1).relu())
    >>> f(ember.ones(3))
    tensor([3., 3., 3.])
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import warnings

from ember._mode import mode as _dispatch_mode
from ember._mutations import STRUCTURE
from ember.amp.state import USED as _AMP_USED  # (ember.amp.state imports nothing of Ember)
from ember.autograd.grad_mode import no_grad
from ember.autograd.grad_mode import state as grad_state
from ember.compile.arena import ArenaPool
from ember.compile.breaks import run_lazily
from ember.compile.capture import GraphBreak, Unsupported, flatten, trace, unflatten
from ember.compile.cuda_runtime import build_cuda_kernels, cuda_groups
from ember.compile.dynamic import build_template, dynamic_entry, mark_dynamic
from ember.compile.effects import Guards, TensorGuards, structure, structure_holds
from ember.compile.inplace import VersionCounts, aliased, write_counts
from ember.compile.ir import IRGraph, Node, node_makers, node_readers
from ember.compile.joint import JointFunction
from ember.compile.lower import relax_views, schedule
from ember.compile.passes import fuse, run_passes
from ember.compile.passes.functionalize import functionalize_writes
from ember.compile.passes.mincut import min_cut_partition
from ember.compile.program_runtime import build_programs
from ember.compile.runtime import BuildError, build_kernels, execute
from ember.compile.step import attach_node_refs, node_eager, node_steps
from ember.compile.step import prepare as prepare_step
from ember.nn.modules.module import Module
from ember.tensor import Tensor

__all__ = ["compile", "CompileError", "OptimizedModule", "CompiledFunction", "RECOMPILE_LIMIT"]

log = logging.getLogger("ember.compile")
RECOMPILE_LIMIT = 8  # as torch._dynamo.config.cache_size_limit
_BACKENDS = ("inductor", "eager", "aot_eager")
_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileError(RuntimeError):
    """``fullgraph=True`` and the function cannot be captured as one graph."""


def _channels(options) -> set:
    env = {c.strip() for c in os.environ.get("EMBER_LOGS", "").split(",") if c.strip()}
    if options and options.get("explain"):
        env |= {"graph", "fusion", "codegen"}
    return env


def _tensor_guard(t: Tensor):
    return (tuple(t.shape), t.dtype, str(t.device), t.requires_grad)


class _Entry:
    """One compiled graph for one guard set."""

    def __init__(self, traced, graph, steps, kernels, plain_steps):
        self.traced = traced
        self.graph = graph
        self.steps = steps  # with fused groups
        self.kernels = kernels
        self.plain_steps = plain_steps  # every node through apply (autograd records)
        self.consts = TensorGuards([b[1] for b in traced.bindings if b[0] == "const"])
        self.guards = Guards(traced.guard_grads or [], traced.opt_guards or [], traced.module_guards or [])
        self.placeholders = [n for n in graph.nodes if n.kind == "placeholder"]
        self.joint = False
        self.ran = False  # set after the first call that succeeded
        self.writes = any(n.kind == "call" and n.prim.inplace for n in graph.nodes)
        counts = getattr(graph, "write_counts", None)  # placeholders written in place (inplace.py)
        self.versions = VersionCounts(counts) if counts else None
        # the modules' parameters, buffers and children (a replaced parameter is another input),
        # compared only when ``STRUCTURE`` moved (set by CompiledFunction._build)
        self.structure: list = []
        self.structure_seen = None

    def make_joint(self, bwd_steps, saved, needs=()) -> None:
        """Set up the forward/backward split (see ``joint.JointFunction``)."""
        g = self.graph
        self.joint = True
        self.needs = list(needs)  # forward calls whose autograd node a gradient kernel reads
        self.joint_steps = node_steps(self.steps, set(needs), "grad_fn")
        self.bwd_base = bwd_steps  # before node_steps (dynamic.py plans its memory again)
        self.bwd_steps = node_steps(bwd_steps, set(needs), "grad_fn")
        self.saved = saved
        self.ret_nodes = list(dict.fromkeys(o for o in g.outputs[: g.n_out] if isinstance(o, Node)))
        self.diff_order = g.outputs[g.n_out : g.n_out + g.n_diff]
        self.diff_nodes = set(self.diff_order)
        self.gouts = [(n, n.binding[1]) for n in self.placeholders if n.binding[0] == "gout"]
        self.grad_of = {p: o for p, o in zip(g.grad_inputs, g.outputs[g.n_out + g.n_diff :]) if isinstance(o, Node)}
        if not all(n in self.ret_nodes for n in self.diff_order):
            self.joint = False  # a differentiable output that is not a graph value: op by op

    def consts_ok(self) -> bool:
        if self.structure_seen != STRUCTURE[0]:
            now = STRUCTURE[0]
            if not structure_holds(self.structure):
                return False
            self.structure_seen = now
        return self.consts.check() and self.guards.check()

    def run(self, arg_tensors: list):
        env = {}
        if self.versions is not None:  # native writes: count them in the version counters as eager
            for n in self.placeholders:
                if n.binding[0] != "gout":
                    env[n] = arg_tensors[n.binding[1]] if n.binding[0] == "arg" else n.binding[1]
            versions = self.versions.before(env)
            if aliased(env, self.versions.written):  # one memory, two placeholders: captured order
                execute(self.plain_steps, {}, env)
                out = self._outputs(arg_tensors, env)
            else:
                out = self._run(arg_tensors, env)
            self.versions.after(env, versions)
            return out
        return self._run(arg_tensors, env)

    def _run(self, arg_tensors: list, env: dict):
        needs_grad = False
        for n in self.placeholders:
            kind, ref = n.binding
            if kind == "gout":
                continue
            t = arg_tensors[ref] if kind == "arg" else ref
            needs_grad = needs_grad or t._requires_grad
            env[n] = t
        if self.joint and needs_grad and grad_state.enabled:
            ins = [env.get(n) for n in self.placeholders]
            outs = JointFunction.apply(self, *ins)
            env.update(zip(self.ret_nodes, outs if isinstance(outs, tuple) else (outs,)))
        elif needs_grad and grad_state.enabled and self.traced.outputs_require_grad:
            # Training through the compiled forward: every op runs through apply so the
            # primitives' gradient rules record the backward graph (the forward is not fused).
            execute(self.plain_steps, {}, env)
        elif grad_state.enabled and needs_grad:
            with no_grad():  # the function's results need no gradient (it ran under no_grad)
                execute(self.steps, self.kernels, env)
        else:
            execute(self.steps, self.kernels, env)
        return self._outputs(arg_tensors, env)

    def _outputs(self, arg_tensors: list, env: dict):
        outs = []
        for o in self.graph.outputs[: self.graph.n_out]:
            if isinstance(o, Node):
                outs.append(env[o])
            elif o[0] == "arg":
                outs.append(arg_tensors[o[1]])
            else:
                outs.append(o[1])
        return unflatten(self.traced.out_spec, outs)


class CompiledFunction:
    """A function compiled by :func:`compile`; call it like the original."""

    def __init__(self, fn, *, fullgraph, backend, options, module=None, dynamic=None):
        self.fn = fn
        self.fullgraph = fullgraph
        self.backend = backend
        self.options = dict(options or {})
        self.module = module
        self.cache: dict = {}  # guard key -> _Entry or the reason it runs eagerly (str)
        self.others: dict = {}  # guard key -> earlier entries whose other guards failed
        self.breaks: list = []  # the graph-break reasons met (see breaks.py)
        self.dynamic = dynamic
        self.dyn_dims: list = []  # (tensor argument, dim) of any size (see dynamic.py)
        self.exact: dict = {}  # (key, shapes) -> a graph specialized inside a dynamic key
        self.segments_run = 0  # graph segments run in lazy mode
        self.segment_cache: dict = {}  # a pure segment's signature -> (graph, steps, kernels)
        self.recompiles = 0
        self.gave_up = None  # reason every call runs eagerly
        self.on_cuda = False  # the call being compiled has CUDA tensors
        self.arg_kinds: set = set()  # the device kinds of its tensor arguments
        self._hit = None  # (entry, module.training, grad mode) of the last call without arguments
        functools.update_wrapper(self, fn)

    def _say(self, channel, msg):
        if channel in _channels(self.options):
            print(f"[ember.compile:{channel}] {msg}", file=sys.stderr)

    def _log(self, channel):
        """``log(msg)`` for a pass when ``channel`` is on, else None (the passes then format no
        message: printing a graph costs milliseconds, a warm-cache compile is ~0.1 s)."""
        if channel not in _channels(self.options):
            return None
        return lambda m: self._say(channel, m)

    def _key(self, args, kwargs):
        tensors: list = []
        spec = flatten((args, kwargs), tensors)
        training = self.module.training if self.module is not None else None
        guards = [_tensor_guard(t) for t in tensors]
        for k, d in self.dyn_dims:  # a dynamic dim is any size: not part of the key
            if k < len(guards) and d < len(guards[k][0]):
                g = guards[k]
                guards[k] = (g[0][:d] + (None,) + g[0][d + 1 :],) + g[1:]
        key = (_freeze(spec), tuple(guards), training, grad_state.enabled, _autocast_key())
        return key, tensors

    def _fallback(self, reason: str):
        if self.fullgraph:
            raise CompileError(f"ember.compile(fullgraph=True) cannot capture {_name(self.fn)}: {reason}")
        warnings.warn(f"ember.compile: running {_name(self.fn)} eagerly: {reason}", stacklevel=4)
        return reason

    def _trace(self, args, kwargs):
        """The capture: joint (forward and backward) when grad mode is on, else forward only."""
        if not grad_state.enabled:
            return trace(self.fn, args, kwargs)
        try:
            return trace(self.fn, args, kwargs, joint=True)
        except GraphBreak:
            raise
        except Unsupported as e:
            traced = trace(self.fn, args, kwargs)  # raises Unsupported if the forward fails too
            self._say("graph", f"backward not captured ({e}): with gradients the graph runs op by op")
            return traced

    def _fuse_and_build(self, graph, views):
        """Fuse each view (forward, backward) and build every kernel into one library; returns
        ``(steps per view, kernels)``, unfused when fusion is off or the build fails. Calls whose
        autograd node a gradient op reads, and those gradient ops, stay unfused and run eagerly
        inside programs (``step.node_eager``)."""
        plain = [schedule(v, []) for v in views]
        if self.backend != "inductor":
            return plain, {}
        if self.on_cuda:
            return self._build_cuda(graph, views, plain)
        all_groups, steps = [], []
        try:
            for v in views:
                groups = fuse(v, log=self._log("fusion"))
                for g in groups:
                    g.id = len(all_groups)
                    all_groups.append(g)
                steps.append(schedule(v, groups))
                if steps[-1].plan is not None and self._log("fusion"):
                    self._say("fusion", str(steps[-1].plan))
        except RuntimeError as e:  # fusion must keep the graph acyclic; never fail the call
            self._say("fusion", f"no fusion: {e}")
            return plain, {}
        makers = node_makers(graph)
        programs = build_programs(
            list(zip(views, steps)),
            log=self._log("codegen"),
            force_eager=makers | node_readers(graph),
            eager=node_eager(makers, "grad_fn"),
        )
        if programs is not None:  # the whole schedule as native segments (program_runtime.py)
            return programs
        try:
            fns = build_kernels(all_groups, log=self._log("codegen"))
        except BuildError as e:
            self._fallback(f"{e}; the graph runs op by op")
            return plain, {}
        return steps, dict(enumerate(fns))

    def _build_cuda(self, graph, views, plain):
        """CUDA tensors: the fused groups as CUDA kernels, the rest through apply (cuda_runtime.py)."""
        if getattr(graph, "write_counts", None):
            return plain, {}  # in-place writes keep eager order: op by op
        groups_of, steps, all_groups = [], [], []
        try:
            for v in views:
                groups = cuda_groups(fuse(v, log=self._log("fusion")))
                for g in groups:
                    g.id = len(all_groups)
                    all_groups.append(g)
                groups_of.append(groups)
                s = schedule(v, groups)
                s.plan = None  # no arena: each output is a fresh device array
                steps.append(s)
            kernels = build_cuda_kernels(all_groups, log=self._log("codegen"))
        except Exception as e:  # noqa: BLE001 - NVRTC, CuPy or fusion: never fail the call
            self._fallback(f"CUDA code generation failed ({type(e).__name__}: {e}); the graph runs op by op")
            return plain, {}
        return steps, kernels

    def _compile(self, args, kwargs):
        # No garbage collection while compiling: capture, passes and codegen make hundreds of
        # thousands of short-lived objects, and a full collection would walk the whole heap
        # (up to a third of a warm compile: issue 9's 0.2 s).
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._compile_now(args, kwargs)
        finally:
            if enabled:
                gc.enable()

    def _compile_now(self, args, kwargs):
        try:
            traced = self._trace(args, kwargs)
        except GraphBreak as e:
            if self.fullgraph:
                return self._fallback(str(e))
            self.breaks.append(str(e))
            self._say("graph", f"graph break: {e}; {_name(self.fn)} runs as graph segments and Python")
            log.info("ember.compile: graph break in %s: %s", _name(self.fn), e)
            return _LAZY
        except Unsupported as e:
            return self._fallback(str(e))
        return self._build(traced, args, kwargs)

    def _build(self, traced, args, kwargs):
        """Optimize, fuse and build a capture into a cache entry (or the reason it runs eagerly)."""
        kinds = self.arg_kinds | {b[1]._device.type for b in traced.bindings if b[0] == "const"}
        self.on_cuda = kinds == {"cuda"}  # a function of no arguments: its parameters' device
        if kinds - {"cpu"} and not self.on_cuda:
            return self._fallback(f"tensors on several devices ({', '.join(sorted(kinds))})")
        if traced.writebacks and not traced.step:
            # Python state the function changes (train()/eval(), a .grad): only a step graph
            # replays it, and its results carry no autograd history.
            if traced.outputs_require_grad:
                return self._fallback("the function changes Python state (train/eval mode, .grad) and needs gradients")
            traced.step = True
        if getattr(traced, "gained_grad", 0) and not traced.step:
            # ``p.add_(x)`` with x requiring grad: eager gives p new autograd history (AddBackward,
            # or CopySlices on a view's base) that a graph's outputs do not carry; these calls run
            # the function itself, silently (the key includes requires_grad and grad mode: calls
            # under no_grad, or with x not requiring grad, still run the graph)
            reason = "an in-place write gives a tensor new autograd history"
            self._say("graph", f"{_name(self.fn)} runs eagerly for this guard set: {reason}")
            log.info("ember.compile: %s runs eagerly: %s", _name(self.fn), reason)
            return reason
        if traced.step:  # the function ran backward() itself: the whole step is one graph
            if self.on_cuda:
                return self._fallback("whole training steps compile to CPU programs only; on CUDA it runs eagerly")
            # its graphs (first step, steady state) never run at once: one arena (arena.py)
            traced.arena_pool = self.__dict__.setdefault("_arena_pool", ArenaPool())
            try:
                return prepare_step(traced, log=self._log("graph"))
            except Unsupported as e:
                return self._fallback(str(e))
        graph = IRGraph.from_traced(traced)
        try:
            needs = attach_node_refs(graph, traced)  # gradient kernels that read their node
        except Unsupported as e:
            return self._fallback(str(e))
        if self._log("graph"):
            self._say("graph", f"captured {_name(self.fn)}:\n{graph}\nops: {dict(graph.counts())}")
        graph.write_counts = write_counts(graph)
        if graph.write_counts and not graph.grad_inputs and functionalize_writes(graph) and self._log("graph"):
            # a chain of writes to an argument or buffer: out-of-place ops that fuse, one copy_
            self._say("graph", f"after functionalize_writes:\n{graph}")
        run_passes(graph, log=self._log("graph"))
        relax_views(graph)
        makers = node_makers(graph)
        needs = [n for n in graph.nodes if n in makers]  # what the passes left of them
        if not graph.grad_inputs:
            (steps,), kernels = self._fuse_and_build(graph, [graph])
            return self._modules_of(_Entry(traced, graph, steps, kernels, schedule(graph, [])))
        fwd, bwd, saved = min_cut_partition(graph, log=self._log("graph"))
        plain = schedule(fwd, [])  # op by op through apply: eager's backward
        if not any(isinstance(o, Node) for o in graph.outputs[graph.n_out + graph.n_diff :]):
            (steps,), kernels = self._fuse_and_build(graph, [fwd])
            return self._modules_of(_Entry(traced, graph, steps, kernels, plain))
        (steps, bwd_steps), kernels = self._fuse_and_build(graph, [fwd, bwd])
        entry = self._modules_of(_Entry(traced, graph, steps, kernels, plain))
        entry.make_joint(bwd_steps, saved, needs)
        return entry

    def _modules_of(self, entry):
        """Give a forward entry the structure guard of the modules its capture ran (and the
        compiled module itself, whose ``__call__`` the capture does not see)."""
        mods = [m for m, _ in entry.traced.module_guards or ()]
        if self.module is not None and all(m is not self.module for m in mods):
            mods.append(self.module)
        entry.structure = structure(mods)
        return entry

    def __call__(self, *args, **kwargs):
        if _dispatch_mode.handler is not None or self.gave_up is not None:
            return self.fn(*args, **kwargs)  # inside a capture or a profile: trace through
        hit = self._hit
        if hit is not None and not args and not kwargs:
            # The last call's graph, for a call without arguments (a training step closing over
            # its model and batch): the key is grad mode, autocast and module.training only.
            entry, training, grad = hit
            if (
                grad_state.enabled is grad
                and not (_AMP_USED[0] and _amp_state().local.active)  # no thread turned autocast on
                and (self.module is None or self.module.training is training)
                and entry.consts_ok()
            ):
                return entry.run([])
        if self.dynamic is True and not self.dyn_dims and not self.cache:
            tensors: list = []
            flatten((args, kwargs), tensors)
            self.dyn_dims = [(k, d) for k, t in enumerate(tensors) for d in range(t.dim())]
        key, tensors = self._key(args, kwargs)
        kinds = self.arg_kinds = {t._device.type for t in tensors}
        self.on_cuda = kinds == {"cuda"}  # fused groups as CUDA kernels (cuda_runtime.py)
        if kinds - {"cpu"} and not self.on_cuda:
            return self.fn(*args, **kwargs)  # meta, or tensors on several devices: eager
        dyn = self.dynamic is None and not self.on_cuda  # CUDA: a graph per shape (no dynamic replanning)
        old = mark_dynamic(self, key, tensors) if key not in self.cache and dyn else None
        if old is not None:
            key, tensors = self._key(args, kwargs)
            if key not in self.cache and not isinstance(old, str) and old is not _LAZY and old.consts_ok():
                if self.recompiles < RECOMPILE_LIMIT:
                    self.recompiles += 1
                    self.cache[key] = build_template(self, old, tensors, args, kwargs)
        entry = self.cache.get(key)
        if self.dyn_dims and entry is not None and not isinstance(entry, str) and entry is not _LAZY:
            if entry.consts_ok():
                entry = dynamic_entry(self, entry, key, tensors, args, kwargs)
                if entry is None:
                    shapes = tuple(tuple(t.shape) for t in tensors)
                    entry = self.exact.get((key, shapes))
                    if entry is None and self.recompiles < RECOMPILE_LIMIT:
                        self.recompiles += 1
                        entry = self.exact[(key, shapes)] = _stamp(self._compile(args, kwargs), tensors)
                    if entry is None:
                        return self.fn(*args, **kwargs)
        if not isinstance(entry, str) and entry is not None and not entry.consts_ok():
            # Guards beyond the key failed (a parameter's shape, whether .grad exists, an
            # optimizer's state): another graph compiled for this key may fit.
            others = self.others.setdefault(key, [])
            others.append(entry)
            entry = next((e for e in others if e.consts_ok()), None)
            if entry is not None:
                others.remove(entry)
                self.cache[key] = entry
        if entry is None:
            if self.recompiles >= RECOMPILE_LIMIT:
                self.gave_up = f"recompile limit ({RECOMPILE_LIMIT}) reached: guards keep failing (last key {key[1]})"
                log.warning("ember.compile: %s: %s; running eagerly from now on", _name(self.fn), self.gave_up)
                return self.fn(*args, **kwargs)
            self.recompiles += 1
            entry = self.cache[key] = _stamp(self._compile(args, kwargs), tensors)
        if isinstance(entry, str):
            return self.fn(*args, **kwargs)
        if entry is _LAZY:
            return run_lazily(self, self.fn, args, kwargs)
        if entry.ran:
            if not tensors and not args and not kwargs and not self.dyn_dims and key[-1] is None:
                self._hit = (entry, key[2], key[3])
            return entry.run(tensors)
        try:
            out = entry.run(tensors)
        except Exception as e:
            # A compiler bug must not break the program: the first run of a graph that writes
            # nothing in place can be redone eagerly (a genuine error is raised again there).
            if entry.writes:
                raise
            self.cache[key] = self._fallback(f"the compiled graph failed ({type(e).__name__}: {e})")
            return self.fn(*args, **kwargs)
        entry.ran = True
        return out


class _Lazy:
    """The cache entry of a guard set whose capture met a graph break: run lazily."""

    def consts_ok(self) -> bool:
        return True


_LAZY = _Lazy()


def _autocast_key():
    """The autocast state a call runs under (a graph captured under autocast bakes its casts in)."""
    state = _amp_state()
    return tuple((d, s[1]) for d, s in sorted(state.local.devices.items()) if s[0]) if state.local.active else None


@functools.cache
def _amp_state():
    from ember.amp import state  # not at import time: ember.amp imports the ops

    return state


def _stamp(entry, tensors):
    """Remember the sizes a new entry was specialized to (dynamic.py compares them)."""
    if not isinstance(entry, str) and entry is not _LAZY:
        entry.shapes = tuple(tuple(t.shape) for t in tensors)
    return entry


def _requires_grad(binding, args, kwargs) -> bool:
    kind, ref = binding
    if kind == "const":
        return ref.requires_grad
    tensors: list = []
    flatten((args, kwargs), tensors)
    return tensors[ref].requires_grad


def _freeze(spec):
    """A hashable form of an argument structure (lists become tuples; unhashable constants are
    guarded by their repr)."""
    kind, body = spec
    if kind == "T":
        return spec
    if kind == "C":
        try:
            hash(body)
            return (kind, type(body), body)
        except TypeError:
            return (kind, type(body), repr(body))
    if kind is dict:
        return (kind, tuple((k, _freeze(v)) for k, v in body))
    return (kind, tuple(_freeze(s) for s in body))


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class OptimizedModule(Module):
    """The module :func:`compile` returns for a Module: calls run the compiled forward;
    ``state_dict()`` keys carry the ``_orig_mod.`` prefix and other attributes come from the
    original module, as in PyTorch."""

    def __init__(self, mod: Module, compiled: CompiledFunction):
        super().__init__()
        self._orig_mod = mod
        object.__setattr__(self, "_compiled", compiled)
        self.training = mod.training

    def forward(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["_orig_mod"], name)


def compile(
    model=None,
    *,
    fullgraph: bool = False,
    dynamic: bool | None = None,
    backend="inductor",
    mode: str | None = None,
    options: dict | None = None,
    disable: bool = False,
):
    """Compile a function or a Module (PyTorch's ``torch.compile``); usable as a decorator.

    Example:
        >>> import ember
        >>> @ember.compile
        ... def f(x):
        ...     return (x.exp() * 2).sigmoid()
        >>> f(ember.zeros(2)).shape
        ember.Size([2])
    """
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if mode not in _MODES:
        raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(m for m in _MODES if m)}")
    if backend not in _BACKENDS:
        raise ValueError(f"ember.compile: unknown backend {backend!r} (expected one of {', '.join(_BACKENDS)})")
    if model is None:
        return functools.partial(
            compile, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode, options=options, disable=disable
        )
    if disable:
        return model
    be = "eager" if backend == "aot_eager" else backend
    if isinstance(model, Module):
        cf = CompiledFunction(
            model.__call__, fullgraph=fullgraph, backend=be, options=options, module=model, dynamic=dynamic
        )
        return OptimizedModule(model, cf)
    if not callable(model):
        raise RuntimeError(f"ember.compile: expected a callable or a Module, got {type(model).__name__}")
    return CompiledFunction(model, fullgraph=fullgraph, backend=be, options=options, dynamic=dynamic)
