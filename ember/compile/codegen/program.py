"""The whole schedule of a compiled graph as one C program (the "mega-kernel").

:func:`render_program` turns a scheduled graph (the steps of ``lower.schedule``: fused groups and
single nodes) into C source: every fused group's kernel (rendered by ``codegen/c.py``), every
other node through its lowering (``codegen/lowerings.py``: BLAS for linear layers and attention,
the hand kernels of ``backends/ckernels`` for layer_norm, gelu and softmax, loops for copies,
gathers and sums), over one arena of intermediate buffers planned by liveness (``arena.py``).

Values live in slots of a pointer table ``P`` (``P[0]`` is the arena): inputs (placeholders,
values made outside this graph, constants), outputs (fresh arrays per call, so results never
alias the arena) and values made by eager steps. A node without a lowering ends the native
segment; it runs through ``apply`` and the next segment continues, so a graph never fails to run.
Each segment is one C function ``int name(void **P)`` (0, or 1 on an out-of-range index): a
table of calls of the op blocks, each distinct block one function (``codegen/blocks.py``), so
identical layers and experts compile once.

Example:
    >>> from ember.compile.codegen.program import render_program  # see tests/test_compile_program.py
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ember.compile.arena import plan
from ember.compile.codegen import blocks, lowp
from ember.compile.codegen.c import kernel_sizes
from ember.compile.codegen.lowerings import CTYPES, Alias, Inplace, dname, lower
from ember.compile.codegen.lowerings_conv import CONV_PROTOS

__all__ = ["ProgramSpec", "Refused", "render_program", "EXTERNALS", "gemm_prelude"]


class Refused(Exception):
    """The graph cannot run as a program (an eager op would write into arena memory)."""


# The hand kernels a program may call, with their C prototypes (backends/ckernels/kernels.c).
_PROTOS = {
    "layer_norm_fwd": "void (*)(const {T} *, const {T} *, const {T} *, {T} *, {T} *, {T} *, int64_t, int64_t, double, int)",
    "gelu_fwd": "void (*)(const {T} *, {T} *, int64_t, int, int)",
    "softmax_fwd": "void (*)(const {T} *, {T} *, int64_t, int64_t, int, int)",
    "softmax_bwd": "void (*)(const {T} *, const {T} *, {T} *, int64_t, int64_t, int, int)",
    "gelu_bwd": "void (*)(const {T} *, const {T} *, {T} *, int64_t, int, int)",
    "layer_norm_bwd": "void (*)(const {T} *, const {T} *, const {T} *, const {T} *, const {T} *, {T} *, {T} *, "
    "{T} *, int64_t, int64_t, int)",
    "fused_adam": "void (*)(int64_t, void **, void **, void **, void **, void **, const int64_t *, "
    "const double *, double, double, double, double, double, int, int, int, int)",
    # backends/ckernels/gemm.c and the LSTM step kernels (codegen/lowerings_rnn.py)
    "gemm_pack_b": "void (*)(const {T} *, int64_t, int64_t, int64_t, int64_t, {T} *)",
    "gemm_small": "void (*)(int64_t, int64_t, int64_t, {T}, const {T} *, int64_t, int64_t, const {T} *, int64_t, int, "
    "{T} *, int64_t)",
    "lstm_seq_fwd": "void (*)(const {T} *, const {T} *, const {T} *, const {T} *, int64_t, {T} *, {T} *, {T} *, "
    "{T} *, int64_t, int64_t, int64_t, int, int)",
    "lstm_seq_bwd": "void (*)(const {T} *, const {T} *, const {T} *, const {T} *, const {T} *, {T} *, {T} *, {T} *, "
    "int64_t, int64_t, int64_t, int, int)",
    "lstm_fwd_step": "void (*)(const {T} *, const {T} *, const {T} *, const {T} *, int64_t, {T} *, {T} *, {T} *, "
    "int64_t, int64_t)",
    "lstm_bwd_step": "void (*)(const {T} *, const {T} *, int64_t, const {T} *, const {T} *, const {T} *, {T} *, {T} *, "
    "int64_t, int64_t)",
}
_PROTOS.update(CONV_PROTOS)  # convolutions, batch norm, pooling, SGD (codegen/lowerings_conv.py)
EXTERNALS = [f"{k}_{s}" for k in _PROTOS for s in ("f32", "f64")]


def gemm_prelude(int_type: str | None) -> str:
    """Declarations of the BLAS gemm pointers (set by ``ember_program_init``)."""
    if int_type is None:
        return ""
    lines = []
    for T, s in (("float", "s"), ("double", "d")):
        lines.append(
            f"static void (*ember_{s}gemm)(int, int, int, {int_type}, {int_type}, {int_type}, {T}, const {T} *, "
            f"{int_type}, const {T} *, {int_type}, {T}, {T} *, {int_type});"
        )
    return "\n".join(lines) + "\n"


def _ext_decl(name: str) -> str:
    base, suffix = name.rsplit("_", 1)
    T = "float" if suffix == "f32" else "double"
    proto = _PROTOS[base].format(T=T)
    return proto.replace("(*)", f"(*ember_{name})", 1) + ";"


@dataclass
class ProgramSpec:
    """What the runtime needs to run one view's program (see ``program_runtime.Program``).

    ``str(spec)`` is its one-line report: C and eager nodes, and the arena's planned bytes."""

    n_slots: int = 1
    arena_bytes: int = 0
    naive_bytes: int = 0  # the arena's buffers without reuse (what the liveness plan saves)
    n_buffers: int = 0
    inputs: list = field(default_factory=list)  # (slot, node, numpy dtype)
    consts: list = field(default_factory=list)  # (slot, array)
    outputs: list = field(default_factory=list)  # (slot, node, shape, numpy dtype) made per call
    eager_slots: dict = field(default_factory=dict)  # node -> slot (an eager value C reads)
    plan: list = field(default_factory=list)  # ("c", function name) or ("eager", node)
    homes: dict = field(default_factory=dict)  # C value -> (slot or ("arena", bytes), elem offset)
    results: list = field(default_factory=list)  # nodes to put into env after the run
    written_inputs: list = field(default_factory=list)  # (slot, node) of inputs written in place
    source: str = ""
    native_nodes: int = 0
    eager_nodes: list = field(default_factory=list)
    seg_tables: list = field(default_factory=list)  # (segment, C table of its calls, its length): blocks.py
    templates: list = field(default_factory=list)  # (name, C definition) of every view's blocks, in table order

    def __str__(self) -> str:
        return (
            f"program: {self.native_nodes} nodes in C, {len(self.eager_nodes)} eager; arena {self.arena_bytes} "
            f"bytes for {self.n_buffers} buffers ({self.naive_bytes} bytes without reuse)"
        )


class _Ctx:
    """The lowering context of one step: hands out symbolic pointers, resolved after planning."""

    def __init__(self, prog, step):
        self.prog, self.step = prog, step

    def ctype(self, node):
        return None if node is None or node.dtype is None else CTYPES.get(dname(node))

    def ptr(self, node) -> str:
        return self.prog.use(node, self.step)

    def scratch(self, nbytes: int) -> str:
        return self.prog.scratch(nbytes, self.step)

    def keep(self, node, key: str, nbytes: int) -> str:
        """A ``char *`` buffer that lives from this step to the last one asking :meth:`kept` for
        it: what a lowered forward op saves for its gradient op (an LSTM's gate activations)."""
        return self.prog.keep(node, key, nbytes, self.step)

    def node_readers(self, node) -> list:
        """The gradient ops of this view that read ``node``'s autograd node (``NodeRef``): a
        forward lowering keeps what they would otherwise recompute only when there are some."""
        return self.prog.readers.get(node, [])

    def kept(self, node, key: str):
        """The buffer ``keep(node, key, ...)`` gave (now live up to this step), or None when
        ``node`` was not lowered with it (it ran eagerly, or in another view)."""
        return self.prog.kept(node, key, self.step)

    def ext(self, name: str) -> str:
        self.prog.exts.add(name)
        return f"ember_{name}"

    def gemm(self, dt: str):
        return None if self.prog.int_type is None else {"float32": "ember_sgemm", "float64": "ember_dgemm"}[dt]

    def items(self, node) -> dict:
        return self.prog.items.get(node, {})

    def is_output(self, node) -> bool:
        return node in self.prog.out_set

    def threads(self, n: int, minimum: int) -> int:
        from ember.backends.ckernels.ops import _threads

        return _threads(n, minimum)


class _Builder:
    def __init__(self, view, steps, prefix: str, int_type, exts: set, force_eager=(), templates=None, kernels=None):
        self.view, self.steps, self.prefix = view, steps, prefix
        self.templates = {} if templates is None else templates  # name -> (index, C definition)
        self.kernel_names = kernels or {}  # group id -> the name of its kernel (equal kernels: one)
        self.force_eager = set(force_eager)
        self.written: set = set()  # roots written in place
        self.int_type, self.exts = int_type, exts
        # (a multi-output call is an output of a step graph only to keep its autograd node: its
        # items are the values)
        self.out_set = {o for o in view.outputs if hasattr(o, "kind") and not (o.kind == "call" and o.prim.multi)}
        self.alias: dict = {}  # node -> (base node, elem offset)
        self.defined: dict = {}  # root node -> step of definition
        self.journal = None  # (root, its previous last step) per use() while a lowering runs
        self.last: dict = {}  # root node -> last step reading it
        self.eager_defined: set = set()
        self.scratches: list = []  # (key, nbytes, step)
        self.keeps: dict = {}  # (node id, key) -> (nbytes, first step, last step): see _Ctx.keep
        self.items: dict = {}
        self.readers: dict = {}  # forward node -> gradient ops reading its autograd node
        # copy_ node -> (group output, placeholder): the group writes the placeholder itself
        # (step_fusion.write_into: an optimizer update in place)
        self.into = getattr(steps, "write_into", None) or {}
        self.into_out = {o: dst for o, dst in self.into.values()}
        for n in view.nodes:
            if n.kind == "item":
                self.items.setdefault(n.args[0], {})[n.index] = n
            for v in n.params.values() if n.kind == "call" else ():
                if type(v).__name__ == "NodeRef":
                    self.readers.setdefault(v.op, []).append(n)

    def root(self, node):
        off = 0
        while node in self.alias:
            node, o = self.alias[node]
            off += o
        return node, off

    def use(self, node, step) -> str:
        r, off = self.root(node)
        last = self.last.get(r)
        if self.journal is not None:
            self.journal.append((r, last))
        self.last[r] = step if last is None or last < step else last
        # bfloat16/float16 values are passed to fused groups as their bits (codegen/lowp.py)
        T = "uint16_t" if lowp.is_low(dname(node)) else CTYPES[dname(node)]
        return f"(({T} *)@B{r.id}@ + {off})"

    def scratch(self, nbytes, step) -> str:
        key = f"s{len(self.scratches)}"
        self.scratches.append((key, nbytes, step))
        return f"((char *)@S{key}@)"

    def keep(self, node, key, nbytes, step) -> str:
        self.keeps[(node.id, key)] = (nbytes, step, step)
        return f"((char *)@Ssk{node.id}_{key}@)"

    def kept(self, node, key, step):
        k = self.keeps.get((node.id, key))
        if k is None:
            return None
        self.keeps[(node.id, key)] = (k[0], k[1], max(k[2], step))
        return f"((char *)@Ssk{node.id}_{key}@)"

    def build(self) -> tuple:
        """``(ProgramSpec, C text of this view's segments)``."""
        spec = ProgramSpec()
        units = []  # (kind, payload, step): ("c", lines) / ("eager", node)
        produced_c = set()
        for s, (kind, x) in enumerate(self.steps):
            if kind == "group":
                name = self.kernel_names.get(x.id, f"ember_k{x.id}")  # rendered by codegen/c.py
                args = [self.use(a, s) for a in x.inputs]
                for o in x.outputs:
                    if o in self.into_out:  # its home is the placeholder it replaces
                        self.alias[o] = (self.into_out[o], 0)
                        self.written.add(self.into_out[o])
                    self.defined[o] = s
                    produced_c.add(o)
                    args.append(self.use(o, s))
                sizes = [str(v) for v in kernel_sizes(x)]  # c.py's contract: n, rows, cols
                units.append(("c", [f"{name}({', '.join(args + sizes)});"], s, None))
                spec.native_nodes += len(x.nodes)
                continue
            if x.kind == "constant":
                continue  # a slot set once, at build time
            if x in self.into:  # the group wrote the placeholder already: the copy is an alias
                self.alias[x] = (self.into[x][1], 0)
                produced_c.add(x)
                spec.native_nodes += 1
                continue
            if x.kind == "item":
                parent = x.args[0]
                if parent in produced_c:
                    continue  # written by its call's lowering
                units.append(("eager", x, s, None))
                self.eager_defined.add(x)
                self.defined[x] = s
                continue
            saved = (len(self.scratches), set(self.exts), dict(self.keeps))
            self.journal = []
            res = None if x in self.force_eager else lower(x, _Ctx(self, s))
            journal, self.journal = self.journal, None
            if res is None:
                if x not in self.force_eager and any(type(v).__name__ == "NodeRef" for v in x.params.values()):
                    raise Refused(f"'{x.op}' (%{x.id}) reads an autograd node and has no lowering here")
                for r, last in reversed(journal):  # forget what the failed lowering asked for
                    if last is None:
                        del self.last[r]
                    else:
                        self.last[r] = last
                del self.scratches[saved[0] :]
                self.exts.clear()
                self.exts.update(saved[1])
                self.keeps = saved[2]
                for a in x.inputs():
                    r, _ = self.root(a)
                    self.last[r] = max(self.last.get(r, s), s)
                units.append(("eager", x, s, None))
                spec.eager_nodes.append(x)
                self.defined[x] = s
                if x.prim.inplace:  # an eager write: never into the arena, inputs copied back
                    k = x.params.get("n_written", 1)
                    for a in x.args[:k]:
                        if hasattr(a, "kind"):
                            r, _ = self.root(a)
                            if r in produced_c and r not in self.out_set:
                                raise Refused(f"'{x.op}' (%{x.id}) would write into the arena in place")
                            self.written.add(r)
                if not x.prim.multi:
                    self.eager_defined.add(x)
                continue
            spec.native_nodes += 1
            produced_c.add(x)
            if isinstance(res, Inplace):
                self.alias[x] = (res.target, 0)
                r, _ = self.root(x)
                self.written.add(r)
                self.last[r] = max(self.last.get(r, s), s)
                units.append(("c", res.lines, s, x))
                continue
            if isinstance(res, Alias):
                self.alias[x] = (res.base, res.offset)
                r, _ = self.root(x)
                self.last[r] = max(self.last.get(r, s), s)
                continue
            if x.prim.multi:
                for item in self.items.get(x, {}).values():
                    produced_c.add(item)
                    self.defined[item] = s
                    self.use(item, s)
            else:
                self.defined[x] = s
                self.use(x, s)
            units.append(("c", res, s, x))
        return self._finish(spec, units, produced_c)

    def _finish(self, spec, units, produced_c):
        n_steps = len(self.steps)
        slot_of: dict = {}

        def new_slot(node):
            slot_of[node] = spec.n_slots
            spec.n_slots += 1
            return slot_of[node]

        # Readers of each value: eager steps read C values through numpy views of their homes.
        for kind, x, s, _ in units:
            if kind == "eager":
                for a in x.inputs():
                    r, _ = self.root(a)
                    self.last[r] = max(self.last.get(r, s), s)
        for o in self.out_set:
            r, _ = self.root(o)
            self.last[r] = n_steps
        roots = set(self.last) | set(self.defined)
        buffers = []
        for r in sorted(roots, key=lambda n: n.id):
            if r in self.alias:
                continue
            if r.kind == "constant":
                spec.consts.append((new_slot(r), np.ascontiguousarray(r.value._data)))
            elif r not in self.defined:  # made outside this graph: a per-call input
                spec.inputs.append((new_slot(r), r, np.dtype(dname(r))))
                if r in self.written:
                    spec.written_inputs.append((slot_of[r], r))
            elif r in self.eager_defined:
                spec.eager_slots[r] = new_slot(r)
            elif r in self.out_set and r in produced_c:
                spec.outputs.append((new_slot(r), r, r.shape, np.dtype(dname(r))))
            elif r in produced_c:
                nbytes = math.prod(r.shape) * np.dtype(dname(r)).itemsize
                buffers.append((r, nbytes, self.defined[r], self.last.get(r, self.defined[r])))
        buffers += [(k, nb, s, s) for k, nb, s in self.scratches]
        buffers += [(f"sk{nid}_{key}", nb, s0, s1) for (nid, key), (nb, s0, s1) in self.keeps.items()]
        offsets, spec.arena_bytes = plan(buffers)
        spec.n_buffers = len(buffers)
        spec.naive_bytes = sum((nb + 63) // 64 * 64 for _k, nb, _s0, _s1 in buffers)

        def base(m) -> str:
            key = m.group(1)
            if key.startswith("s"):
                return f"(A + {offsets[key]})"
            node = self._node_by_id[int(key)]
            return f"P[{slot_of[node]}]" if node in slot_of else f"(A + {offsets[node]})"

        self._node_by_id = {n.id: n for n in roots}
        for n in list(produced_c) + list(self.eager_defined):
            if n.dtype is None:
                continue
            r, off = self.root(n)
            home = slot_of.get(r, ("arena", offsets.get(r)))
            spec.homes[n] = (home, off)

        def arg(key: str, nbytes: int) -> tuple:  # a pointer parameter: (slot, byte offset)
            if key.startswith("S"):
                return 0, offsets[key[1:]] + nbytes
            node = self._node_by_id[int(key[1:])]
            return (slot_of[node], nbytes) if node in slot_of else (0, offsets[node] + nbytes)

        segs, entries, k = [], [], 0  # entries: (comment, template index, args) of the segment
        for kind, x, _s, node in units + [("end", None, n_steps, None)]:
            if kind == "c":
                comment = "/* group */" if node is None else f"/* %{node.id} = {node.op} */"
                text = "\n".join("        " + line for line in x)
                if not text.strip():
                    entries.append((comment, None, ()))
                    continue
                body, params = blocks.templatize(text)
                tname, definition = blocks.function(body, params)
                index = self.templates.setdefault(tname, (len(self.templates), definition))[0]
                args = [v for t, key, off in params for v in arg(key, off * blocks.SIZES[t])]
                entries.append((comment, index, args))
                continue
            if entries:
                name = f"{self.prefix}_seg{k}"
                k += 1
                tab = blocks.table(name, entries)
                n = sum(2 + len(a) for _c, i, a in entries if i is not None)
                spec.seg_tables.append((name, tab, n))
                segs.append(f"{tab}int {name}(void **P) {{ return ember_run(P, {name}_t, {n}); }}\n")
                spec.plan.append(("c", name))
                entries = []
            if kind == "eager":
                spec.plan.append(("eager", x))
        spec.results = [o for o in dict.fromkeys(self.out_set) if o in produced_c or o in self.eager_defined]
        spec.results.sort(key=lambda n: n.id)
        return spec, "\n".join(segs)


def render_program(views: list, int_type: str | None, kernels_src: str, force_eager=(), kernels=None) -> tuple:
    """``views``: ``[(graph view, steps)]``; ``kernels_src``, ``kernels``: the C of every fused group
    and each group's kernel name (``blocks.render_kernels``; without names, ``ember_k<id>``).
    ``force_eager``: nodes that must run through the eager path (see ``step_program.py``).
    Returns ``(source, [ProgramSpec per view], externals)``; raises :class:`Refused`. The source
    is one unit: the kernels, each distinct op block once (``codegen/blocks.py``) and per segment
    its table of calls (``codegen/chunked.py`` builds large programs in pieces instead)."""
    exts: set = set()
    templates: dict = {}
    specs, bodies = [], []
    for i, (view, steps) in enumerate(views):
        spec, body = _Builder(view, steps, f"ember_p{i}", int_type, exts, force_eager, templates, kernels).build()
        specs.append(spec)
        bodies.append(body)
    ext_list = sorted(exts)
    decls = "\n".join(_ext_decl(e) for e in ext_list)
    init = ["void ember_program_init(void **F) {", "    (void)F;"]
    if int_type is not None:
        init += ["    ember_sgemm = F[0];", "    ember_dgemm = F[1];"]
    init += [f"    ember_{e} = F[{2 + i}];" for i, e in enumerate(ext_list)]
    init.append("}")
    init.append("int ember_noop(void **P) { (void)P; return 0; }  /* for measuring the Python side */")
    defs = [d for _i, d in templates.values()]
    fns = ", ".join(templates) or "0"
    src = "\n".join(
        [
            kernels_src,
            gemm_prelude(int_type) + decls,
            *defs,
            f"static int (*ember_fns[])(void **, const int64_t *) = {{{fns}}};",
            blocks.RUNNER,
            *init,
            "",
            *bodies,
        ]
    )
    listed = [(name, d) for name, (_i, d) in templates.items()]
    for spec in specs:
        spec.source = src
        spec.templates = listed
    return src, specs, ext_list
