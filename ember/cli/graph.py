"""``ember graph``: draw a registry model's compiled training step (forward, backward, fusion groups).

The model (``ember.models.registry``, its default recipe's sizes) is trained one step on a small
random batch through ``ember.compile``: the whole step (forward, loss, backward, an SGD update)
where capture takes ``backward()`` and ``step()`` inside a compiled function, else the compiled
model (the joint forward and backward where capture takes the backward, else the forward). It is
written as Graphviz DOT (``ember.viz.compiled_dot``) and, where the ``dot`` program exists,
rendered to SVG (or PNG/PDF) beside it.

Example:
    >>> from ember.cli.graph import compiled_graph
    >>> src, note = compiled_graph("mlp", batch=2)
    >>> src.startswith("digraph compiled {")
    True
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

__all__ = ["add_parser", "compiled_graph", "main"]


def add_parser(sub) -> None:
    p = sub.add_parser("graph", help="draw a model's compiled step: forward, backward, fusion groups (DOT/SVG)")
    from ember.models.registry import MODELS

    p.add_argument("--model", default="gpt", choices=list(MODELS))
    p.add_argument("--out", default=None, help="output file without suffix (default: runs/graph/<model>)")
    p.add_argument("--format", default="svg", choices=["svg", "png", "pdf", "dot"], help="picture format")
    p.add_argument("--batch", type=int, default=2, help="batch size of the example input")
    p.add_argument("--forward-only", action="store_true", help="capture without gradients (no backward)")


def _inputs(name: str, batch: int):
    import ember
    from ember.models.registry import MODELS

    spec = MODELS[name]
    recipe = spec.recipe
    if spec.task.dataset == "fashion-mnist":
        meta = {"num_classes": 10}
        x, y = ember.randn(batch, 1, 28, 28), ember.randint(0, 10, (batch,))
    else:
        meta = {"vocab_size": 65}
        x = ember.randint(0, 65, (batch, recipe.block_size))
        y = ember.randint(0, 65, (batch, recipe.block_size))
    model = spec.builder(**spec.task.model_kwargs(recipe, meta))
    return spec, model, x, y


def compiled_graph(name: str, batch: int = 2, forward_only: bool = False) -> tuple:
    """``(DOT text, one-line note on what was captured)`` of model ``name``'s compiled step."""
    import ember
    from ember.viz import compiled_dot

    ember.manual_seed(0)
    spec, model, x, y = _inputs(name, batch)
    if not forward_only:  # the whole training step, where capture takes backward() and step()
        opt = ember.optim.SGD(model.parameters(), lr=0.01)

        def step(x, y):
            opt.zero_grad()
            loss = _loss(spec, model, x, y)
            loss.backward()
            opt.step()
            return loss

        cs = ember.compile(step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cs(x, y)
        entries = [e for e in cs.cache.values() if hasattr(e, "graph")]
        if entries and any(n.phase == "backward" for n in entries[-1].graph.nodes):
            names = {**dict(model.named_buffers()), **dict(model.named_parameters())}
            return compiled_dot(
                cs, names=names
            ), f"{name}: the whole training step (forward, backward, SGD update): " + _counts(entries[-1].graph)
    cm = ember.compile(model)
    with warnings.catch_warnings(record=True) as caught, ember.set_grad_enabled(not forward_only):
        warnings.simplefilter("always")
        loss = _loss(spec, cm, x, y)
        if not forward_only:
            loss.backward()
    entries = [e for e in cm._compiled.cache.values() if not isinstance(e, str)]
    if not entries:
        why = "; ".join(str(w.message) for w in caught) or "nothing captured"
        if not forward_only:  # with gradients it runs eagerly: draw what compiles, the forward
            src, note = compiled_graph(name, batch, True)
            return src, f"{note} (with gradients the model runs eagerly: {why})"
        raise RuntimeError(f"ember graph: {name} could not be compiled: {why}")
    g = entries[-1].graph
    n_bwd = sum(1 for n in g.nodes if n.kind == "call" and n.phase == "backward")
    what = "forward and backward (joint graph)" if n_bwd else "forward only"
    if not n_bwd and not forward_only:
        what += " (the backward of this model is not captured yet; it runs eagerly)"
    return compiled_dot(cm), f"{name}: {what}: {_counts(g)}"


def _loss(spec, model, x, y):
    """The training loss (the image task's own also counts correct predictions, a graph break)."""
    if spec.task.dataset == "fashion-mnist":
        import ember

        return ember.nn.functional.cross_entropy(model(x), y)
    return spec.task.loss(model, x, y)[0]


def _counts(g) -> str:
    calls = [n for n in g.nodes if n.kind == "call"]
    bwd = sum(1 for n in calls if n.phase == "backward")
    upd = sum(1 for n in calls if n.prim.inplace)
    return f"{len(calls) - bwd - upd} forward ops, {bwd} backward ops, {upd} in-place updates"


def main(args) -> int:
    from ember import viz

    try:
        src, note = compiled_graph(args.model, args.batch, args.forward_only)
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 1
    base = Path(args.out) if args.out else Path("runs") / "graph" / args.model
    base.parent.mkdir(parents=True, exist_ok=True)
    dot_path = base.with_suffix(".dot")
    dot_path.write_text(src)
    print(note)
    print(f"wrote {dot_path}")
    if args.format != "dot":
        if shutil.which("dot") is None:
            print("Graphviz's 'dot' program was not found: only the DOT file was written (install 'graphviz')")
        else:
            print(f"wrote {viz.render(src, base.with_suffix('.' + args.format))}")
    return 0
