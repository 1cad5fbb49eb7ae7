"""A large whole-graph program compiled in pieces: each piece its own cached library.

A program's op blocks are functions (``codegen/blocks.py``: each distinct block once, named by a
hash of its text) called from per-segment tables. Even deduplicated, a training step's blocks
are tens of KB of C (GCC's ``-O3`` time grows with that volume), and a step compiles two graphs
(the first step, which creates the optimizer state, and the steady state) that share most of
their blocks.

Here the block functions are cut into *chunks* (a few KB each, at boundaries chosen by the
blocks' contents), each chunk compiled as its own small shared library through
``backends/ckernels``' source-hash cache, the chunks in parallel (one compiler process per CPU).
A chunk's source depends only on its blocks (it declares only the hand kernels and fused-group
kernels it calls, as pointers set by its ``ember_chunk_init``), and chunk boundaries follow the
blocks' contents (a boundary after a block whose hash says so), so blocks the second graph
shares with the first are found in the cache. The main library keeps the fused-group kernels,
the segments' call tables and the table of block addresses (set by ``ember_program_init``).

Example:
    >>> from ember.compile.codegen.chunked import split  # see tests/test_compile_chunked.py
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field

from ember.compile.codegen import blocks
from ember.compile.codegen import c as _c
from ember.compile.codegen.program import _ext_decl, gemm_prelude

__all__ = ["Chunk", "split", "MIN_BYTES"]

MIN_BYTES = 14_000  # programs with fewer bytes of blocks than this compile as one unit (a library costs a process)
_SOFT, _HARD = 6_000, 24_000  # a chunk ends at a content boundary past _SOFT bytes, always at _HARD
_KERNEL = re.compile(r"^void (ember_kernel_\w+)\(([^)]*)\) \{", re.M)
_FUNCTION = re.compile(r"^int (ember_b\w+)\(", re.M)


@dataclass
class Chunk:
    """One piece: its name, its library's source, the init table's symbols (``"sgemm"``/``"dgemm"``,
    a hand kernel's name, or a fused group's ``ember_kernel_<hash>``), in order, and its block functions."""

    name: str
    source: str
    table: list = field(default_factory=list)
    functions: list = field(default_factory=list)  # the block functions it defines, in order


def _pieces(blocks: list) -> list:
    out, cur, size = [], [], 0
    for b in blocks:
        if len(b) >= _SOFT:  # a large block alone: the same chunk wherever it is used
            if cur:
                out.append(cur)
            out.append([b])
            cur, size = [], 0
            continue
        cur.append(b)
        size += len(b)
        if size >= _HARD or (size >= _SOFT and zlib.crc32(b.encode()) % 4 == 0):
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def split(specs: list, kernels_src: str, int_type: str | None, exts: list) -> tuple:
    """``(main source, [Chunk])`` for the programs of ``specs`` (``render_program``'s), or None when
    their blocks are small enough to compile as one unit. ``kernels_src``: the fused groups'
    kernels (``blocks.render_kernels``), a library of their own that the chunks call (the same
    for both graphs of a step). ``exts``: the hand kernels the blocks call, in the order of
    ``ember_program_init``'s table (after the two gemm pointers), which then holds every block
    function's address, in the order of ``specs[0].templates``. The main library is only the
    segments' call tables: it compiles in a few milliseconds."""
    templates = specs[0].templates if specs else []
    if sum(len(d) for _n, d in templates) < MIN_BYTES:
        return None
    protos = {name: params for name, params in _KERNEL.findall(kernels_src)}
    chunks = []
    for piece in _pieces([d for _n, d in templates]):
        body = "\n".join(piece)
        name = "ember_c" + hashlib.sha256(body.encode()).hexdigest()[:20]
        chunk = _chunk(name, body, protos, int_type, exts)
        chunk.functions = [m for m in _FUNCTION.findall(body)]
        chunks.append(chunk)
    n = len(templates)
    init = ["void ember_program_init(void **F) {", "    (void)F;"]
    init += [
        f"    for (int i = 0; i < {n}; i++) ember_fns[i] = (int (*)(void **, const int64_t *))F[{2 + len(exts)} + i];"
    ]
    init.append("}")
    init.append("int ember_noop(void **P) { (void)P; return 0; }  /* for measuring the Python side */")
    main = "\n".join(
        [
            "#include <stdint.h>",
            f"static int (*ember_fns[{max(n, 1)}])(void **, const int64_t *);",
            blocks.RUNNER,
            *init,
            "",
            *(
                f"{tab}int {seg}(void **P) {{ return ember_run(P, {seg}_t, {n_ints}); }}\n"
                for spec in specs
                for seg, tab, n_ints in spec.seg_tables
            ),
        ]
    )
    return main, chunks


def _chunk(name: str, body: str, protos: dict, int_type: str | None, exts: list) -> Chunk:
    """A chunk's library: the math prelude, pointers to what it calls, its init and functions."""
    table, decls, init = [], [], []
    if int_type is not None:
        decls.append(gemm_prelude(int_type))
        for s in ("sgemm", "dgemm"):
            init.append(f"    ember_{s} = F[{len(table)}];")
            table.append(s)
    for e in exts:
        if f"ember_{e}(" in body:
            decls.append(_ext_decl(e))
            init.append(f"    ember_{e} = F[{len(table)}];")
            table.append(e)
    for k in sorted(set(re.findall(r"\b(ember_kernel_\w+)\(", body))):
        decls.append(f"static void (*{k})({protos[k]});")
        init.append(f"    {k} = F[{len(table)}];")
        table.append(k)
    head = _c.prelude()
    if not any(k in body for k in ("ember_stream", "EMBER_FENCE", "_mm")):
        # the streaming-store helpers bring in <immintrin.h>: most of a small chunk's compile time
        head = head.replace(_c._STREAM, "", 1)
    src = "\n".join(
        [
            head,
            *decls,
            "void ember_chunk_init(void **F) {",
            "    (void)F;",
            *init,
            "}",
            body,
        ]
    )
    return Chunk(name, src, table)
