"""Offset-independent op blocks: each distinct block of a program is one C function, emitted once.

A lowered op's C text names its buffers by symbolic pointers (``program._Builder.use``:
``((float *)@B<id>@ + <elements>)``; scratch and kept buffers ``((char *)@S<key>@)``) that the
memory plan resolves to ``P[slot]`` or an arena offset. The blocks of a transformer's layers, or
of an MoE's experts, differ only in those pointers. :func:`templatize` replaces each distinct
pointer expression by a parameter ``p0, p1, ...``, so identical blocks give one *template*:

    int ember_b<hash>(void **P, const int64_t *ember_a) {
        float *p0 = (float *)((char *)P[ember_a[0]] + ember_a[1]);   /* slot, byte offset */
        ...the block, over p0, p1, ...
        return 0;
    }

A segment is then a table of calls ``{template index, 2 * n params, (slot, byte offset)...}`` that
:data:`RUNNER` walks (stopping at the first nonzero return: an index out of range), so GCC compiles
each distinct block once per program instead of once per layer and expert, and the per-graph code
is data. Template names are content hashes: ``codegen/chunked.py`` builds templates in cached
libraries that the two graphs of a training step (and other programs) share.

Example:
    >>> body, params = templatize("    x(((float *)@B7@ + 64), ((char *)@Ss0@));")
    >>> body
    '    x(p0, p1);'
    >>> params
    [('float', 'B7', 64), ('char', 'Ss0', 0)]
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["SIZES", "templatize", "function", "table", "RUNNER", "render_kernels"]

# The element types ``use``/``scratch``/``keep`` cast to, and their sizes (a pointer of another type
# keeps its offset in the block's text: only its base becomes a parameter).
SIZES = {
    "float": 4,
    "double": 8,
    "int64_t": 8,
    "int32_t": 4,
    "int16_t": 2,
    "int8_t": 1,
    "uint8_t": 1,
    "uint16_t": 2,
    "char": 1,
}
_TYPED = re.compile(r"\(\((" + "|".join(SIZES) + r") \*\)@([BS]\w+)@(?: \+ (-?\d+))?\)")
_BARE = re.compile(r"@([BS]\w+)@")
_PARAM = re.compile(r"\bp(\d+)\b")
WIDE = 32  # a block with more pointers than this reads them from an array


def templatize(text: str) -> tuple:
    """``(body, params)``: ``text`` with each distinct pointer expression replaced by ``p<k>``;
    ``params[k]`` is ``(C type, marker key, element offset)``, in order of first use."""
    params: list = []
    index: dict = {}

    def param(key) -> str:
        k = index.get(key)
        if k is None:
            k = index[key] = len(params)
            params.append(key)
        return f"p{k}"

    def typed(m) -> str:
        return param((m.group(1), m.group(2), int(m.group(3) or 0)))

    body = _TYPED.sub(typed, text)
    body = _BARE.sub(lambda m: f"((char *){param(('char', m.group(1), 0))})", body)
    return body, params


def function(body: str, params: list) -> tuple:
    """``(name, C definition)`` of the template of ``templatize``'s result: the name is a hash of
    the text, so equal blocks (anywhere, in any program) are one function."""
    if len(params) <= WIDE:
        head = [
            f"    {t} *p{k} = ({t} *)((char *)P[ember_a[{2 * k}]] + ember_a[{2 * k + 1}]);"
            for k, (t, _m, _o) in enumerate(params)
        ]
    else:  # (an optimizer update over every parameter: hundreds of pointers, set in a loop)
        head = [
            f"    char *ember_p[{len(params)}];",
            f"    for (int64_t k = 0; k < {len(params)}; k++) ember_p[k] = (char *)P[ember_a[2 * k]] + ember_a[2 * k + 1];",
        ]
        types = [t for t, _m, _o in params]
        body = _PARAM.sub(lambda m: f"(({types[int(m.group(1))]} *)ember_p[{m.group(1)}])", body)
    # (the block in a scope of its own: its locals may shadow anything)
    text = "\n".join([*head, "    (void)P; (void)ember_a;", "    {", body, "    }", "    return 0;", "}", ""])
    name = "ember_b" + hashlib.sha256(text.encode()).hexdigest()[:20]
    return name, f"int {name}(void **P, const int64_t *ember_a) {{\n{text}"


def table(name: str, entries: list) -> str:
    """The C table of one segment: ``entries`` are ``(comment, template index or None, args)``
    (a None index: a comment only, an op with no code of its own)."""
    lines = []
    for comment, k, args in entries:
        row = "" if k is None else " ".join(f"{v}," for v in (k, len(args), *args))
        lines.append(f"    {comment} {row}".rstrip())
    if not any(k is not None for _c, k, _a in entries):
        lines.append("    0")  # (a C array may not be empty)
    return f"static const int64_t {name}_t[] = {{\n" + "\n".join(lines) + "\n};\n"


# Walks a segment's table: each call's template index, its argument count and its arguments.
RUNNER = """
static int ember_run(void **P, const int64_t *t, int64_t n) {
    for (int64_t i = 0; i < n; i += 2 + t[i + 1]) {
        int rc = ember_fns[t[i]](P, t + i + 2);
        if (rc) return rc;
    }
    return 0;
}
"""


def render_kernels(groups: list) -> tuple:
    """``(kernels, wrappers, {group id: kernel name})``: the fused groups' kernels (``codegen/c.py``)
    after the math prelude, each distinct kernel once as ``ember_kernel_<hash>`` (a name blocks
    call, the same in every program), and in ``wrappers`` an ``ember_k<id>`` for each group (what
    ``runtime`` looks up in a one-unit program), a call of it."""
    from ember.compile.codegen.c import CRenderer, kernel_args, prelude

    r = CRenderer()
    out, wrappers, names, seen = [prelude()], [], {}, {}
    for g in groups:
        text = r.render(g, "EMBER_KERNEL")
        name = seen.get(text)
        if name is None:
            name = seen[text] = "ember_kernel_" + hashlib.sha256(text.encode()).hexdigest()[:20]
            out.append(text.replace("EMBER_KERNEL", name))
        names[g.id] = name
        args = kernel_args(g)
        wrappers.append(
            f"void ember_k{g.id}({', '.join(f'{t} {a}' for t, a in args)}) "
            f"{{ {name}({', '.join(a for _t, a in args)}); }}\n"
        )
    return "\n".join(out), "\n".join(wrappers), names
