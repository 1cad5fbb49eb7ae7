"""Minimal pytrees: nested tuples, lists and dicts of tensors, flattened to a list and back."""

from __future__ import annotations

__all__ = ["tree_flatten", "tree_unflatten", "tree_map"]


def tree_flatten(tree):
    """``(leaves, spec)``: the leaves in order, and what ``tree_unflatten`` needs to rebuild."""
    leaves: list = []

    def walk(t):
        if isinstance(t, (tuple, list)):
            return (type(t), [walk(x) for x in t])
        if isinstance(t, dict):
            return (dict, [(k, walk(v)) for k, v in t.items()])
        leaves.append(t)
        return None

    return leaves, walk(tree)


def tree_unflatten(leaves, spec):
    it = iter(leaves)

    def build(s):
        if s is None:
            return next(it)
        kind, children = s
        if kind is dict:
            return {k: build(c) for k, c in children}
        items = [build(c) for c in children]
        return kind(items) if kind in (tuple, list) else kind(*items)

    return build(spec)


def tree_map(fn, tree):
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([fn(x) for x in leaves], spec)
