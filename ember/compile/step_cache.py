"""The warm cache of whole training steps: a new process skips the passes and the rendering.

A compiled training step (``step.py``) is captured anew in every process, but what follows the
capture (update decomposition, functionalization, fusion, scheduling, memory planning and the
rendering of the program's C) depends only on the captured graph. This module keys that work by
the graph *before* the passes and keeps its result on disk, next to the built libraries
(``backends/ckernels``' cache folder): the optimized graph, its fused schedule and the rendered
program (sources, slot layout, plan). A hit in a new process loads that and only links the cached
libraries (``program_runtime.link_programs``).

The key is exact, not a fingerprint of what is printed: every node's op, arguments, parameters
(floats by value, arrays by their bytes), shapes and dtypes, the outputs, the values of constants,
which graph inputs are the same tensor, and what the passes read besides the graph: the thread
count the generated code was planned for, the ``EMBER_*`` switches, the BLAS integer type, the
compiler, and the ``ember`` package's files (their sizes and modification times: an edited pass
never reads a stale entry). A parameter of a type the key cannot state exactly makes the step uncacheable (it compiles
as before).

Tensors the graph is bound to (parameters, gradients, optimizer state, constants) are never
stored: the stored graph names them by their position in the capture, and a hit binds it to this
process's tensors. An entry that cannot be read (truncated, corrupt, another Python) is ignored
and written again; writes are atomic; beyond :data:`MAX_ENTRIES` entries the least recently used
are removed. Entries live in ``steps/`` of the kernels' cache folder, or in
``$EMBER_STEP_CACHE_DIR``. ``EMBER_STEP_CACHE=0`` turns the cache off; with compile
logs on (``EMBER_LOGS=graph`` or ``options={"explain": True}``) it is not read, so every pass prints.

Example (where entries go, unless ``$EMBER_STEP_CACHE_DIR`` says otherwise):
    >>> from ember.compile import step_cache
    >>> step_cache.folder().name
    'steps'
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

import ember
from ember._device import device as Device
from ember._dtype import dtype as DType
from ember.compile.ir import Node
from ember.tensor import Tensor

__all__ = ["Uncacheable", "enabled", "step_key", "load", "save"]

_VERSION = 1  # of the stored layout
MAX_ENTRIES = 256  # beyond this many entries, storing one removes the least recently used


class Uncacheable(Exception):
    """The graph holds something the key cannot state exactly (or the payload cannot store)."""


def enabled() -> bool:
    return os.environ.get("EMBER_STEP_CACHE", "1") != "0"


@functools.cache
def _source_hash() -> str:
    """A hash of the ``ember`` package's Python files (passes and lowerings change results): their
    names, sizes and modification times (reading them all would cost a warm compile 8 ms)."""
    root = os.path.dirname(ember.__file__)
    rows = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                rows.append(f"{os.path.relpath(folder, root)}/{name}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def _environment() -> tuple:
    from ember._threads import get_num_threads
    from ember.backends import ckernels
    from ember.backends.ckernels.ops import _parent
    from ember.compile.codegen import blas as group_blas
    from ember.compile.program_runtime import blas

    b = blas()
    where = ("EMBER_CACHE_DIR", "EMBER_STEP_CACHE_DIR")
    switches = sorted((k, v) for k, v in os.environ.items() if k.startswith("EMBER_") and k not in where)
    return (
        _VERSION,
        _source_hash(),
        sys.version,
        np.__version__,
        get_num_threads(),
        ckernels.uses_openmp(),
        os.getpid() == _parent["pid"],  # a forked child plans every loop serial (ckernels.ops._threads)
        None if b is None else b[0],
        group_blas.tiles_active(),  # gemm.c's register tiles or BLAS, for small GEMMs
        tuple(ckernels.compiler() or ()),
        ckernels._cpu_id(),  # lowerings pick AVX-512 loops where the CPU has them
        tuple(switches),
    )


# Objects of these modules are program state (modules, optimizers, autograd nodes): never stored
_LIVE = ("ember.nn.modules", "ember.optim", "ember.autograd")


def _fields(v) -> list:
    """The attributes of a plain-data parameter object (``__slots__`` or ``__dict__``)."""
    names = [f for c in type(v).__mro__ for f in getattr(c, "__slots__", ()) if f != "__weakref__"]
    return names + sorted(getattr(v, "__dict__", {}))


class _Key:
    """Walks a graph into an exact token list, numbering the tensors it is bound to."""

    def __init__(self):
        self.tensors: list = []  # the bound tensors, in walk order (a hit binds by position)
        self.index: dict = {}  # id(tensor) -> position

    def tensor(self, t) -> tuple:
        k = self.index.get(id(t))
        if k is None:
            k = self.index[id(t)] = len(self.tensors)
            self.tensors.append(t)
        return ("T", k)

    def value(self, v):
        t = type(v)
        if t is Node:  # the commonest: an argument that is another node
            return ("n", v.id)
        if v is None or t in (bool, int, str, complex):
            return v
        if t is float:
            return ("f", v.hex())  # every bit
        if t in (tuple, list):
            return (t.__name__, *[("n", x.id) if type(x) is Node else self.value(x) for x in v])
        if t is dict:
            return ("dict", *[(k, self.value(x)) for k, x in v.items()])
        if isinstance(v, Tensor):
            return self.tensor(v)
        if t is DType:
            return ("dtype", v.name)
        if t is Device:
            return ("device", str(v))
        if t is type:  # a class (a Node subclass, a NumPy scalar type): stored by reference
            return ("type", v.__module__, v.__qualname__)
        if t is slice:
            return ("slice", self.value(v.start), self.value(v.stop), self.value(v.step))
        if v is Ellipsis:
            return ("...",)
        if t is np.ndarray:
            return ("array", v.dtype.str, v.shape, hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())
        if isinstance(v, np.generic):
            return ("scalar", v.dtype.str, v.tobytes())
        if isinstance(v, np.dtype):
            return ("npdtype", v.str)
        if t.__name__ == "NodeRef":
            return ("ref", v.op.id, v.attr)
        if t.__module__.startswith("ember.") and not t.__module__.startswith(_LIVE):
            return (t.__module__, t.__qualname__, *[(f, self.value(getattr(v, f, None))) for f in _fields(v)])
        raise Uncacheable(f"a parameter of type {t.__name__}")

    def graph(self, graph) -> list:
        tokens = []
        for n in graph.nodes:
            if n.kind == "placeholder":
                extra = self.value(n.binding)
            elif n.kind == "constant":
                data = n.value._data if isinstance(n.value, Tensor) else n.value
                extra = (self.value(n.value), self.value(np.asarray(data)))
            elif n.kind == "item":
                extra = (n.index,)
            else:
                extra = (n.prim.name, self.value(n.args), self.value(n.params))
            tokens.append((n.id, n.kind, n.shape, None if n.dtype is None else n.dtype.name, n.phase, extra))
        tokens.append(("outputs", self.value(list(graph.outputs)), graph.n_ret))
        tokens.append(("needs", [n.id for n in graph.needs_node]))
        return tokens


def step_key(graph) -> tuple | None:
    """``(key, bound tensors)`` of a step graph before its passes, or None (not cacheable, or the
    cache is off)."""
    if not enabled():
        return None
    walk = _Key()
    try:
        tokens = walk.graph(graph)
    except Uncacheable:
        return None
    text = repr((tokens, _environment()))
    return hashlib.sha256(text.encode()).hexdigest(), walk.tensors


def folder() -> Path:
    """Where entries are kept: ``$EMBER_STEP_CACHE_DIR``, else ``steps/`` in the kernels' cache
    folder (``EMBER_CACHE_DIR``)."""
    from ember.backends.ckernels import cache_dir

    return Path(os.environ.get("EMBER_STEP_CACHE_DIR") or cache_dir() / "steps")


def _path(key: str) -> Path:
    return folder() / f"{key[:40]}.pkl"


class _Pickler(pickle.Pickler):
    def __init__(self, f, tensors: list, traced):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.ids = {id(t): k for k, t in enumerate(tensors)}
        self.traced = traced

    def persistent_id(self, obj):
        if obj is self.traced:
            return ("traced",)
        t = type(obj)
        if t is Device:
            return ("D", str(obj))
        if t is DType or t is type:
            return None
        if isinstance(obj, Tensor):
            k = self.ids.get(id(obj))
            if k is None:  # a tensor the passes made (a folded constant): stored by value
                return None
            return ("T", k)
        if t.__name__ == "Primitive":
            from ember.ops.dispatch import REGISTRY

            if REGISTRY.get(obj.name) is not obj:
                raise Uncacheable(f"primitive {obj.name!r} is not the registered one")
            return ("P", obj.name)
        if t.__module__.startswith(_LIVE):
            raise Uncacheable(f"the compiled step refers to a {t.__name__}")
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, tensors: list, traced):
        super().__init__(f)
        self.tensors, self.traced = tensors, traced

    def persistent_load(self, pid):
        if pid[0] == "traced":
            return self.traced
        if pid[0] == "T":
            return self.tensors[pid[1]]
        if pid[0] == "D":
            return Device(pid[1])
        from ember.ops.dispatch import REGISTRY

        return REGISTRY[pid[1]]


def save(key: str, tensors: list, traced, payload) -> bool:
    """Store ``payload`` (the optimized step) under ``key``; False when it cannot be stored."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, tensors, traced).dump(payload)
    except Exception:  # something that cannot be stored (Uncacheable, an unpicklable object)
        return False
    path = _path(key)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".step-", delete=False) as f:
            tmp = f.name
            f.write(buf.getvalue())
        os.replace(tmp, path)  # atomic: a reader sees no entry or a whole one
    except OSError:  # a full disk, a folder we may not write: no entry, and no partial file left
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False
    _evict(path.parent)
    return True


def _evict(where: Path) -> None:
    """Keep at most :data:`MAX_ENTRIES` entries: the least recently used go (a hit touches its
    entry). Another process may remove the same files at once: a missing file is no error."""
    entries = []
    for p in where.glob("*.pkl"):
        try:
            entries.append((p.stat().st_mtime_ns, p))
        except OSError:
            continue
    for _t, p in sorted(entries)[: max(0, len(entries) - MAX_ENTRIES)]:
        try:
            p.unlink()
        except OSError:
            pass


def load(key: str, tensors: list, traced):
    """The payload stored under ``key``, bound to this capture's tensors, or None (no entry, or
    one that cannot be read: it is removed, and the step compiles and stores it again)."""
    path = _path(key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        payload = _Unpickler(io.BytesIO(data), tensors, traced).load()
    except Exception:  # truncated or corrupt (any unpickling error): compile again
        try:
            path.unlink()
        except OSError:
            pass
        return None
    try:
        os.utime(path)  # recently used: the last to be evicted
    except OSError:
        pass
    return payload
