"""A large whole-graph program compiled in pieces: each piece its own cached library.

A training step's program is one C function per native segment holding every op's loops inline
(GPT's step: ~100 KB of C, MoE-GPT's ~280 KB). GCC's ``-O3`` time grows with that volume (about
3 s for GPT's, 6 s for MoE-GPT's, per step graph), and a step compiles two graphs (the first
step, which creates the optimizer state, and the steady state) that share most of their ops.

Here each segment's op blocks are cut into *chunks* (``int ember_c<hash>(void **P)``, the same
blocks in the same order, so the same code runs), each chunk compiled as its own small shared
library through ``backends/ckernels``' source-hash cache, the chunks in parallel (one compiler
process per CPU). A chunk's source depends only on its blocks (it declares only the hand kernels
and fused-group kernels it calls, as pointers set by its ``ember_chunk_init``), and chunk
boundaries follow the blocks' contents (a boundary after a block whose hash says so), so an op
sequence the second graph shares with the first is found in the cache. The main library keeps
the fused-group kernels and one short function per segment that calls its chunks in order
(stopping at the first nonzero return, as the inline code did).

Example:
    >>> from ember.compile.codegen.chunked import split  # see tests/test_compile_chunked.py
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field

from ember.compile.codegen import c as _c
from ember.compile.codegen.program import _ext_decl, gemm_prelude

__all__ = ["Chunk", "split", "MIN_BYTES"]

MIN_BYTES = 24_000  # programs with less C than this compile as one unit (a chunk costs a process)
_SOFT, _HARD = 6_000, 24_000  # a chunk ends at a content boundary past _SOFT bytes, always at _HARD
_KERNEL = re.compile(r"^void (ember_k\d+)\(([^)]*)\) \{", re.M)


@dataclass
class Chunk:
    """One piece: its function's name, its library's source and the init table's symbols
    (``"sgemm"``/``"dgemm"``, a hand kernel's name, or ``ember_k<id>``), in order."""

    name: str
    source: str
    table: list = field(default_factory=list)


def _pieces(blocks: list) -> list:
    out, cur, size = [], [], 0
    for b in blocks:
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
    they are small enough to compile as one unit. ``exts``: the hand kernels they call, in the
    order of ``ember_program_init``'s table (after the two gemm pointers), to which the main
    library adds the chunks' function addresses."""
    if sum(len(b) for spec in specs for _name, blocks in spec.seg_blocks for b in blocks) < MIN_BYTES:
        return None
    protos = {name: params for name, params in _KERNEL.findall(kernels_src)}
    chunks: dict = {}  # name -> Chunk (a chunk two segments share is built once)
    segs = []
    for spec in specs:
        for seg, blocks in spec.seg_blocks:
            names = []
            for piece in _pieces(blocks):
                body = "\n".join(piece)
                name = "ember_c" + hashlib.sha256(body.encode()).hexdigest()[:20]
                names.append(name)
                if name not in chunks:
                    chunks[name] = _chunk(name, body, protos, int_type, exts)
            calls = "".join(f"    if ((rc = {n}(P))) return rc;\n" for n in names)
            segs.append(f"int {seg}(void **P) {{\n    int rc = 0;\n{calls}    return rc;\n}}\n")
    order = list(chunks)
    init = ["void ember_program_init(void **F) {"]
    if int_type is not None:
        init += ["    ember_sgemm = F[0];", "    ember_dgemm = F[1];"]
    init += [f"    ember_{e} = F[{2 + i}];" for i, e in enumerate(exts)]
    init += [f"    {n} = (int (*)(void **))F[{2 + len(exts) + i}];" for i, n in enumerate(order)]
    init.append("}")
    init.append("int ember_noop(void **P) { (void)P; return 0; }  /* for measuring the Python side */")
    main = "\n".join(
        [
            kernels_src,
            gemm_prelude(int_type),
            *(_ext_decl(e) for e in exts),
            *(f"static int (*{n})(void **);" for n in order),
            *init,
            "",
            *segs,
        ]
    )
    return main, [chunks[n] for n in order]


def _chunk(name: str, body: str, protos: dict, int_type: str | None, exts: list) -> Chunk:
    """A chunk's library: the math prelude, pointers to what it calls, its init and function."""
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
    for k in sorted(set(re.findall(r"\b(ember_k\d+)\(", body)), key=lambda n: int(n[7:])):
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
            f"int {name}(void **P) {{",
            "    char *A = (char *)P[0];",
            "    (void)A;",
            body,
            "    return 0;",
            "}",
            "",
        ]
    )
    return Chunk(name, src, table)
