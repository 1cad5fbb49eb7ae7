"""Graph passes over an :class:`~ember.compile.ir.IRGraph`, run in the order of ``PIPELINE``.

See ``ember/compile/README.md`` for each pass's invariant.
"""

from ember.compile.passes.cse import cse
from ember.compile.passes.dce import dce
from ember.compile.passes.decompose import decompose
from ember.compile.passes.fold import fold_constants
from ember.compile.passes.functionalize import functionalize
from ember.compile.passes.fusion import FusionGroup, fuse
from ember.compile.passes.simplify import simplify

__all__ = [
    "PIPELINE", "run_passes", "dce", "cse", "fold_constants", "simplify", "fuse", "FusionGroup", "functionalize",
    "decompose",
]  # fmt: skip

PIPELINE = (
    ("functionalize", functionalize),
    ("decompose", decompose),
    ("simplify", simplify),
    ("fold_constants", fold_constants),
    ("cse", cse),
    ("dce", dce),
)


def run_passes(graph, log=None) -> dict:
    """Run the pipeline to a fixed point (at most 4 rounds); returns changes per pass."""
    total = {name: 0 for name, _ in PIPELINE}
    for _ in range(4):
        changed = 0
        for name, p in PIPELINE:
            k = p(graph)
            total[name] += k
            changed += k
            if log and k:
                log(f"after {name} ({k} changes):\n{graph}\nops: {dict(graph.counts())}")
        if not changed:
            break
    if log:
        log(f"passes done: changes {total}; ops: {dict(graph.counts())}")
    return total
