"""The backward engine: iterative, deterministic reverse-mode traversal of the graph.

``run_backward`` orders the nodes reachable from the roots with an explicit-stack depth-first
search (no recursion, so a 10,000-op chain is fine), then visits them in reverse topological
order, calling each node's gradient rule once all gradients for its output have arrived.
Gradients are summed per edge; leaves receive theirs in ``.grad`` (``backward``) or in the
result list (``autograd.grad``).
"""

from __future__ import annotations

from ember._mode import mode as _mode
from ember._mutations import MUTATIONS
from ember.amp import state as amp_state
from ember.autograd import grad_mode
from ember.autograd._hook_checks import checked_hook_result
from ember.autograd.node import Node

__all__ = ["run_backward"]


def _topological_order(roots: list, leaf_counts: dict | None = None) -> list:
    """Nodes reachable from ``roots``, each after every node that feeds gradient into it.

    With ``leaf_counts``, also counts there the edges into each leaf (by id): every edge of every
    reached node is looked at exactly once here, so this costs no second pass over the graph.
    """
    order: list = []
    seen: set = set()
    for root in roots:
        if not isinstance(root, Node) or id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(root.edges))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if isinstance(child, Node):
                    if id(child) not in seen:
                        seen.add(id(child))
                        stack.append((child, iter(child.edges)))
                        break
                elif child is not None and leaf_counts is not None:
                    leaf_counts[id(child)] = leaf_counts.get(id(child), 0) + 1
            else:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _accumulate(buffers: dict, key, grad) -> None:
    prev = buffers.get(key)
    buffers[key] = grad if prev is None else prev + grad


def _run_tensor_hooks(hooks, grad):
    for hook in hooks:
        new = hook(grad)
        if new is not None:
            grad = checked_hook_result(hook, grad, new)
    return grad


def run_backward(roots, root_grads, retain_graph: bool, create_graph: bool, capture=None):
    """Propagate ``root_grads`` from ``roots`` (edges: nodes or leaf tensors) through the graph.

    With ``capture`` (a list of edges) the gradients reaching those edges are returned instead
    of being accumulated into leaves' ``.grad``; gradients of nodes that cannot reach a
    captured edge are not computed.
    """
    buffers: dict = {}
    handed = {id(g._data) for g in root_grads if g is not None}  # see _finalize_leaf
    for root, g in zip(roots, root_grads):
        _accumulate(buffers, id(root), g)
    # A leaf's gradient is final once every node with an edge to it has run: count those edges, so
    # the leaf is accumulated (and its post-accumulate hooks fire) at once, mid-backward.
    pending = None if capture is not None else {}
    order = _topological_order(roots, pending)
    leaves: dict = {}
    for root in roots:
        if not isinstance(root, Node):
            leaves[id(root)] = root

    needed = None
    captured = {}
    if capture is not None:
        wanted = {id(e) for e in capture if e is not None}
        needed = set()
        for node in reversed(order):  # children first: a node is needed if an edge leads to a wanted one
            for e in node.edges:
                if e is not None and (id(e) in wanted or id(e) in needed):
                    needed.add(id(node))
                    break

    prev_mode = grad_mode.state.enabled
    grad_mode.state.enabled = create_graph
    prev_amp, amp_state.local.active = amp_state.local.active, False  # backward is not autocast
    try:
        for node in order:
            grad = buffers.pop(id(node), None)
            if grad is None:
                if pending:
                    _release_leaves(node, pending, buffers, leaves, create_graph, handed)
                continue
            if node.out_hooks:
                grad = _run_tensor_hooks(node.out_hooks, grad)
            if node.retained is not None:
                t = node.retained()
                if t is not None:
                    g = grad if create_graph else grad.detach()
                    t._grad = g if t._grad is None else t._grad + g  # accumulates, as on leaves
                    MUTATIONS[0] += 1  # compiled steps' guards (ember/_mutations.py)
            if capture is not None:
                if id(node) in wanted:
                    captured[id(node)] = grad
                if id(node) not in needed:
                    continue
            node.check_saved()
            hook = _mode.backward_hook
            grads = node.backward(grad) if hook is None else hook(node, grad)
            if not retain_graph and node.saves_values:
                node.freed = True
            edges = node.edges
            if pending and len(grads) == len(edges):
                # Accumulate, and count the edges into leaves as delivered in the same pass.
                for edge, g in zip(edges, grads):
                    if edge is None:
                        continue
                    key = id(edge)
                    if g is not None:
                        prev = buffers.get(key)
                        buffers[key] = g if prev is None else prev + g
                    if isinstance(edge, Node):
                        continue
                    left = pending[key] - 1
                    pending[key] = left
                    if left == 0:
                        leaves.pop(key, None)
                        g = buffers.pop(key, None)
                        if g is not None:
                            _finalize_leaf(edge, g, create_graph, handed)
                    elif g is not None:
                        leaves[key] = edge
                continue
            for edge, g in zip(edges, grads):
                if edge is None or g is None:
                    continue
                _accumulate(buffers, id(edge), g)
                if not isinstance(edge, Node):
                    leaves[id(edge)] = edge
            if pending:
                _release_leaves(node, pending, buffers, leaves, create_graph, handed)
    finally:
        grad_mode.state.enabled = prev_mode
        amp_state.local.active = prev_amp

    if capture is not None:
        for key, leaf in leaves.items():
            if key in buffers and key in wanted:
                g = buffers[key]
                if leaf._hooks:
                    g = _run_tensor_hooks(leaf._hooks, g)
                captured[key] = g
        return [captured.get(id(e)) if e is not None else None for e in capture]

    for key, leaf in leaves.items():
        g = buffers.pop(key, None)
        if g is not None:
            _finalize_leaf(leaf, g, create_graph, handed)
    return None


def _release_leaves(node, pending: dict, buffers: dict, leaves: dict, create_graph: bool, handed: set) -> None:
    """Count ``node``'s edges to leaves as delivered; finalize the leaves that got their last one."""
    for e in node.edges:
        if e is None or isinstance(e, Node):
            continue
        left = pending[id(e)] - 1
        pending[id(e)] = left
        if left == 0:
            g = buffers.pop(id(e), None)
            leaves.pop(id(e), None)
            if g is not None:
                _finalize_leaf(e, g, create_graph, handed)


def _finalize_leaf(leaf, g, create_graph: bool, handed: set) -> None:
    """Run the leaf's hooks, accumulate into ``.grad``, then its post-accumulate-grad hooks.

    ``handed`` holds the ids of arrays that are not this backward's to give away: the caller's
    root gradients and arrays already made some leaf's ``.grad``. A leaf's first gradient that
    is one of them is copied, as PyTorch's AccumulateGrad copies a gradient someone else holds;
    else two leaves (``a + b``) would share one ``.grad`` array and accumulate into each other.
    """
    if leaf._hooks:
        g = _run_tensor_hooks(leaf._hooks, g)
    if not create_graph:
        g = g.detach()
    if leaf._grad is None:
        # A fresh gradient may share memory with another buffer (e.g. an expand of the same
        # array); own it so later in-place accumulation never writes through a view.
        if not create_graph:
            g = _wrap_copy(g) if id(g._data) in handed else g._owned()
            handed.add(id(g._data))
        leaf._grad = g
    else:
        leaf._grad = leaf._grad + g if create_graph else leaf._grad._accumulate_(g)
    MUTATIONS[0] += 1  # compiled steps' guards (ember/_mutations.py)
    if leaf._post_acc_hooks:
        for hook in list(leaf._post_acc_hooks):
            hook(leaf)


def _wrap_copy(g):
    out = g._owned()
    if out is g:  # owned, but not ours to keep
        out = g.detach()
        out._data = g._data.copy()
        out._vc = None
    return out
