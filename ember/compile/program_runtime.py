"""Build and run whole-graph programs (``codegen/program.py``): Python enters C once per segment.

:func:`build_programs` renders the steps of each view (forward, backward) into one C library,
built through ``backends/ckernels``' cache (source-hash keyed), and returns one :class:`Program`
per view. A ``Program`` is the list of steps it replaces (so code that inspects steps still
works) with a :meth:`Program.run` that ``runtime.execute`` calls instead of walking the steps.

BLAS: the generated code calls ``cblas_?gemm``-shaped function pointers set at load time, so
nothing is linked: gemm.c's register tiles where eager uses them, else NumPy's bundled OpenBLAS
(``codegen/blas.py``). Without a BLAS, linear layers run eagerly.

``EMBER_PROGRAM=0`` in the environment turns programs off (steps run one by one as before).

Example:
    >>> from ember.compile.program_runtime import blas
    >>> blas() is None or blas()[0] in ("int64_t", "int32_t")
    True
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ember.backends import ckernels
from ember.compile.codegen import chunked
from ember.compile.codegen.blocks import render_kernels
from ember.compile.codegen.c import prelude
from ember.compile.codegen.program import Refused, render_program
from ember.ops.dispatch import apply
from ember.tensor import Tensor

__all__ = ["Program", "Rendered", "build_programs", "render_programs", "link_programs", "blas", "enabled"]


def enabled() -> bool:
    return os.environ.get("EMBER_PROGRAM", "1") != "0"


def blas():
    """``(integer type, sgemm address, dgemm address)`` the generated code calls (gemm.c's tiles
    where eager uses them, else NumPy's OpenBLAS: ``codegen/blas.py``), or None."""
    from ember.compile.codegen import blas as _blas

    return _blas.gemm_table()


def _wrap(arr) -> Tensor:
    t = Tensor.__new__(Tensor)
    t._data = arr
    return t


class Program(list):
    """One view's steps as native segments and eager steps over a pointer table and an arena."""

    def __init__(self, steps, spec, lib, eager=None, arena_pool=None):
        super().__init__(steps)
        self.memplan = getattr(steps, "plan", None)  # the steps' own memory plan (kernels path)
        # constants go into env as the step-by-step path puts them (a joint forward saves them)
        self.constants = [x for kind, x in steps if kind == "node" and x.kind == "constant"]
        self.spec = spec
        self.eager_call = eager  # eager(node, args, env) -> output, instead of apply (autograd nodes)
        self.P = (ctypes.c_void_p * spec.n_slots)()
        if arena_pool is not None:  # (arena.ArenaPool: shared with programs never run at the same time)
            self.arena = arena_pool.get(spec.arena_bytes)
        else:
            self.arena = np.empty(spec.arena_bytes + 64, np.uint8)
            shift = (-self.arena.ctypes.data) % 64
            self.arena = self.arena[shift : shift + spec.arena_bytes] if spec.arena_bytes else self.arena[:0]
        self.P[0] = self.arena.ctypes.data
        self.arrs: list = [None] * spec.n_slots
        for k, arr in spec.consts:
            self.arrs[k] = arr
            self.P[k] = arr.ctypes.data
        self.inputs = spec.inputs
        self.input_slot = {node: k for k, node, _dt in spec.inputs}
        self.outputs = spec.outputs
        self.noop = lib.ember_noop  # what a segment costs with no work: see bench/compiled_train.py
        self.noop.argtypes = [ctypes.c_void_p]
        self.noop.restype = ctypes.c_int
        self.plan = []
        for kind, x in spec.plan:
            if kind == "c":
                fn = getattr(lib, x)
                fn.argtypes = [ctypes.c_void_p]
                fn.restype = ctypes.c_int
                self.plan.append((fn, None))
            else:
                self.plan.append((None, x))
        # Results that are whole output arrays, and the rest (eager values, offsets into slots)
        whole = {node: k for k, node, _shape, _dt in spec.outputs if spec.homes.get(node, (k, 0)) == (k, 0)}
        self.direct = [(n, whole[n]) for n in spec.results if n in whole]
        self.others = [n for n in spec.results if n not in whole]
        # Fixed numpy views of arena values (an eager step reads them; results never do).
        self.views = {}
        for node, (home, off) in spec.homes.items():
            if isinstance(home, tuple) and home[1] is not None:
                dt = np.dtype(str(node.dtype).replace("ember.", ""))
                n = int(np.prod(node.shape))
                self.views[node] = (
                    np.ndarray(node.shape, dt, self.arena, home[1] + off * dt.itemsize)
                    if n
                    else np.empty(node.shape, dt)
                )

    def _value(self, node, env):
        t = env.get(node)
        if t is not None:
            return t
        v = self.views.get(node)
        if v is None:  # a value in a slot (an output or an eager value), at an element offset
            home, off = self.spec.homes[node]
            n = int(np.prod(node.shape))
            v = self.arrs[home].reshape(-1)[off : off + n].reshape(node.shape)
        return _wrap(v)

    def _own(self, arr):
        """``arr`` as a contiguous array that does not live in the arena."""
        arr = np.ascontiguousarray(arr)
        if self.arena.size and np.may_share_memory(arr, self.arena):
            arr = arr.copy()
        return arr

    def _eager(self, x, env):
        if x.kind == "item":
            t = [t for t in env[x.args[0]] if t is not None][x.index]
        else:
            args = [self._value(a, env) if hasattr(a, "kind") else a for a in x.args]
            t = apply(x.prim, *args, **x.params) if self.eager_call is None else self.eager_call(x, args, env)
            if x.prim.inplace:  # it wrote the caller's tensor: refresh a contiguous copy C reads
                for a in x.args[: x.params.get("n_written", 1)]:
                    k = self.input_slot.get(a)
                    if k is not None and self.arrs[k] is not env[a]._data:
                        np.copyto(self.arrs[k], env[a]._data)
            if x.prim.multi:
                env[x] = t
                return
        k = self.spec.eager_slots.get(x)
        if k is not None or x in self.spec.results:
            arr = self._own(t._data)
            if arr is not t._data:
                t = _wrap(arr)
            if k is not None:
                self.arrs[k] = arr
                self.P[k] = arr.ctypes.data
        env[x] = t

    def run(self, env: dict) -> None:
        """Run over ``env`` (node -> Tensor for every input); puts every result into ``env``."""
        P, arrs = self.P, self.arrs
        for k, node, dt in self.inputs:
            a = env[node]._data
            if a is arrs[k]:
                continue  # the same array as last call (a parameter): its pointer is set
            if a.dtype != dt or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dt)
            arrs[k] = a
            P[k] = a.ctypes.data
        for k, _node, shape, dt in self.outputs:
            a = np.empty(shape, dt)
            arrs[k] = a
            P[k] = a.ctypes.data
        # before the plan: an eager step may read a folded constant (it has a slot, not a home)
        for node in self.constants:
            env[node] = node.value
        for fn, x in self.plan:
            if fn is not None:
                if fn(P):
                    raise IndexError("index out of range in self")
            else:
                self._eager(x, env)
        for k, node in self.spec.written_inputs:  # an input copied to be contiguous: write back
            if arrs[k] is not env[node]._data:
                np.copyto(env[node]._data, arrs[k])
        for node, k in self.direct:
            env[node] = _wrap(arrs[k])
        for node in self.others:
            if node not in env:
                env[node] = self._value(node, env) if node not in self.views else _wrap(self.views[node].copy())


def chunks_enabled() -> bool:
    """Large programs compile in pieces (``codegen/chunked.py``) unless ``EMBER_PROGRAM_CHUNKS=0``."""
    return os.environ.get("EMBER_PROGRAM_CHUNKS", "1") != "0"


def build_chunked(pieces, kernels_src: str, b, ext_addresses: dict, log=None) -> tuple:
    """Build ``chunked.split``'s main library, the fused kernels' library (``kernels_src``) and the
    chunks (each through the source-hash cache, in parallel) and link them by address:
    ``(main library, kernels' library, [block function address])``, or ``(None, None, [])`` when
    any part fails (the caller builds the program as one unit)."""
    main_src, chunks = pieces
    sources = [(main_src, "compiled"), (kernels_src, "groups")] + [(c.source, "chunk") for c in chunks]
    cc = ckernels.compiler()
    cached = cc is not None and all(ckernels.library_path(src, n, cc).exists() for src, n in sources)

    # libgomp came with the hand kernels (ckernels.get(), above): chunks need no thread reapply
    def load(sn):
        return ckernels.load(sn[0], sn[1], {}, reapply=sn[1] == "groups")

    if cached:
        libs = [load(sn) for sn in sources]
    else:  # each build waits on its own compiler process; the longest sources first
        order = sorted(range(len(sources)), key=lambda i: -len(sources[i][0]))
        with ThreadPoolExecutor(max(1, min(len(sources), os.cpu_count() or 1))) as pool:
            built = dict(zip(order, pool.map(lambda i: load(sources[i]), order)))
        libs = [built[i] for i in range(len(sources))]
    if any(lib is None for lib in libs):
        if log:
            log("a chunk of the program failed to build; building it as one unit")
        return None, None, []
    main, glib, chunk_libs = libs[0], libs[1], libs[2:]
    addresses = []  # every block function's, in table order (the chunks hold them in that order)
    for c, clib in zip(chunks, chunk_libs):
        table = []
        for sym in c.table:
            if sym in ("sgemm", "dgemm"):
                table.append(b[1] if sym == "sgemm" else b[2])
            elif sym.startswith("ember_kernel_"):
                table.append(ctypes.cast(getattr(glib, sym), ctypes.c_void_p).value)
            else:
                table.append(ext_addresses[sym])
        F = (ctypes.c_void_p * max(1, len(table)))(*table)
        clib.ember_chunk_init.argtypes = [ctypes.c_void_p]
        clib.ember_chunk_init.restype = None
        clib.ember_chunk_init(F)
        addresses += [ctypes.cast(getattr(clib, f), ctypes.c_void_p).value for f in c.functions]
    main._ember_chunks = [glib, *chunk_libs]  # keep the libraries it calls with the program's
    if log:
        log(f"program compiled in {len(chunks)} chunk(s) ({ckernels.cache_dir()})")
    return main, glib, addresses


def _ext_address(kern, name: str):
    """A hand kernel's address: ``backends/ckernels`` (kernels.c) or its optimizer library."""
    if name.startswith("fused_"):
        from ember.backends.ckernels import optim

        lib = optim._lib()
        if lib is None:
            raise Refused("the optimizer kernels are not available")
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    return ctypes.cast(getattr(kern, name), ctypes.c_void_p).value


def build_programs(views: list, log=None, force_eager=(), eager=None, arena_pool=None):
    """``views``: ``[(graph view, steps)]`` -> ``([Program per view], {group id: its C function})``,
    or None (no compiler, a build error or programs turned off: the caller keeps its steps).
    ``force_eager`` nodes run through ``eager(node, args, env)`` (default ``apply``) between segments.
    ``arena_pool``: an ``arena.ArenaPool`` the programs take their arena from (else their own)."""
    rendered = render_programs(views, log, force_eager)
    return None if rendered is None else link_programs(rendered, views, log, eager, arena_pool)


class Rendered:
    """What :func:`render_programs` made of some views: every source and each view's
    ``ProgramSpec``; plain data over the views' nodes (``step_cache.py`` stores it)."""

    def __init__(self, kernels_src, names, src, specs, exts, pieces):
        self.kernels_src, self.names, self.src = kernels_src, names, src
        self.specs, self.exts, self.pieces = specs, exts, pieces


def render_programs(views: list, log=None, force_eager=()):
    """Render ``views`` (``[(graph view, steps)]``) into one program's C: a :class:`Rendered`, or
    None (programs turned off, no compiler or BLAS table, or a step the program refuses)."""
    if not enabled():
        return None
    cc = ckernels.compiler()
    if cc is None or ckernels.get() is None:
        return None
    b = blas()
    groups = [g for _view, steps in views for kind, g in steps if kind == "group"]
    try:
        kernels_src, wrappers, names = render_kernels(groups)
        src, specs, exts = render_program(
            views, None if b is None else b[0], kernels_src + "\n" + wrappers, force_eager, names
        )
    except Refused as e:
        if log:
            log(f"no program: {e}")
        return None
    if log:  # without the prelude of math helpers (mathf.c)
        log(f"generated source ({ckernels.library_path(src, 'compiled', cc)}):\n{src[len(prelude()) :]}")
        for spec in specs:
            log(str(spec))  # the liveness plan of its arena (passes/memplan.py's is for the kernels path)
    pieces = chunked.split(specs, kernels_src, None if b is None else b[0], exts) if chunks_enabled() else None
    return Rendered(kernels_src, names, src, specs, exts, pieces)


def link_programs(rendered: Rendered, views: list, log=None, eager=None, arena_pool=None):
    """Build (or load from the cache) ``rendered``'s libraries and make one :class:`Program` per
    view: ``([Program], {group id: its C function})``, or None when a library cannot be built."""
    cc = ckernels.compiler()
    kern = ckernels.get()
    if cc is None or kern is None:
        return None
    b = blas()
    groups = [g for _view, steps in views for kind, g in steps if kind == "group"]
    kernels_src, names, src, specs, exts = (
        rendered.kernels_src,
        rendered.names,
        rendered.src,
        rendered.specs,
        rendered.exts,
    )
    try:
        addresses = [_ext_address(kern, e) for e in exts]
    except Refused as e:
        if log:
            log(f"no program: {e}")
        return None
    lib = glib = None  # glib: the fused kernels' own library (chunked builds)
    if rendered.pieces is not None:  # a large program: compiled in cached pieces, in parallel
        lib, glib, chunk_addresses = build_chunked(rendered.pieces, kernels_src, b, dict(zip(exts, addresses)), log)
        if lib is not None:
            addresses = addresses + chunk_addresses
    if lib is None:
        lib = ckernels.load(src, "compiled", {})
    if lib is None:
        if log:
            where = ckernels.library_path(src, "compiled", cc).parent
            log(f"the C compiler failed on the generated program (see {where}); steps run one by one")
        return None
    table = [b[1] if b else None, b[2] if b else None]
    table += addresses
    F = (ctypes.c_void_p * len(table))(*table)
    lib.ember_program_init.argtypes = [ctypes.c_void_p]
    lib.ember_program_init.restype = None
    lib.ember_program_init(F)
    klib = lib if glib is None else glib
    if any(g.kind == "gemm" for g in groups):  # fused GEMM groups call BLAS through c.py's pointers
        from ember.compile.codegen import blas as group_blas

        klib.ember_set_blas.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        klib.ember_set_blas.restype = None
        klib.ember_set_blas(*group_blas.gemm_addresses())
    kernels = {}  # each fused group's function, as ``runtime.build_kernels`` gives them
    for g in groups:
        fn = kernels[g.id] = getattr(klib, f"ember_k{g.id}" if glib is None else names[g.id])
        fn.argtypes = [ctypes.c_void_p] * (len(g.inputs) + len(g.outputs))
        fn.argtypes += [ctypes.c_int64] * 3  # n, rows, cols (codegen/c.py's kernel_args)
        fn.restype = None
    return [Program(steps, spec, lib, eager, arena_pool) for (_view, steps), spec in zip(views, specs)], kernels
