"""Pictures of the computational graph: a tensor's forward graph and its backward graph.

``forward_dot`` and ``backward_dot`` return Graphviz DOT text; ``render`` turns it into SVG or
PNG with the ``dot`` program. ``graph_dot``/``compiled_dot`` draw ``ember.compile``'s IR
(forward, backward and fusion groups coloured).

Example:
    >>> import ember
    >>> from ember import viz
    >>> x1 = ember.tensor(2.0, requires_grad=True)
    >>> x2 = ember.tensor(5.0, requires_grad=True)
    >>> f = ember.log(x1) + x1 * x2 - ember.sin(x2)
    >>> fwd = viz.forward_dot(f, params={"x1": x1, "x2": x2})
    >>> bwd = viz.backward_dot(f, params={"x1": x1, "x2": x2})
    >>> # viz.render(bwd, "backward.svg") draws it where Graphviz is installed
"""

from __future__ import annotations

from ember.viz.dot import backward_dot, forward_dot
from ember.viz.ir import compiled_dot, graph_dot
from ember.viz.render import render

__all__ = ["forward_dot", "backward_dot", "render", "graph_dot", "compiled_dot"]
