"""``ember.func.vmap``: vectorizing map through batching rules at the dispatch point.

``vmap(f)(x)`` runs ``f`` once on :class:`~ember.func._batching.BatchedTensor` s: while it runs,
a handler of ``ember.ops.dispatch.apply`` turns each primitive applied to batched tensors into
the same primitive on the physical tensors (batch dim first), by the primitive's batching rule
(``ember/func/_batching.py``). Nested ``vmap`` s are levels: each handler unwraps its own level
and passes the rest to the one outside it. A primitive without a rule falls back to a loop over
the batch with a warning naming it.

Example:
    >>> import ember
    >>> from ember.func._vmap import vmap
    >>> vmap(lambda row, w: row @ w, in_dims=(0, None))(ember.ones(3, 2), ember.ones(2, 4)).shape
    ember.Size([3, 4])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ember._mode import mode
from ember.autograd.forward_ad import _state as _fw_state
from ember.func import _batched_grad as _bg
from ember.func import _batching as B_
from ember.func._batching_ops import INPLACE_ELEMENTWISE
from ember.func._jvp import _flatten, _unflatten
from ember.func._vmap_random import RANDOM, random_op
from ember.tensor import Tensor

__all__ = ["vmap"]


class _Level:
    count = 0


def _make_handler(level: int, size: int, prev, randomness: str):
    def dispatch(prim, args, params):
        # the physical op: through the handler that was there before this level (outer levels)
        if prev is not None:
            return prev(prim, args, params)
        from ember.ops.dispatch import run

        return run(prim, args, params)

    def apply_phys(prim, *args, **params):
        return dispatch(prim, args, params)

    def handler(prim, inputs, params):
        if prim.name in RANDOM:
            return random_op(prim, inputs, params, level, size, dispatch, randomness)
        if not any(B_.is_batched(x, level) for x in inputs):
            return dispatch(prim, inputs, params)
        if prim.inplace:
            if not B_.is_batched(inputs[0], level):
                raise RuntimeError(
                    f"vmap: {prim.name}(self, *extra_args) is not possible because there exists a Tensor "
                    "`other` in extra_args that has more elements than `self`."
                )
            if prim.name.rstrip("_") in B_.ELEMENTWISE or prim.name in INPLACE_ELEMENTWISE:  # add_, mul_, ...
                r = inputs[0]._value.ndim - 1
                pad = lambda x: B_._pad(x, level, r) if B_.is_batched(x, level) else x  # noqa: E731
                # fill_'s value is a param: a batched 0-dim value is padded as the inputs are
                dispatch(prim, tuple(pad(x) for x in inputs), {k: pad(v) for k, v in params.items()})
            else:  # setitem_, index_add_: a rule writes into the physical self (None: the loop)
                rule = B_.RULES.get(prim.name)
                if rule is None or rule(apply_phys, prim, inputs, params, level, size) is None:
                    _loop(prim, inputs, params, level, size, dispatch)
            return inputs[0]
        rule = B_.RULES.get(prim.name)
        out = None
        if rule is not None:
            # a rule's own ops (reshape, squeeze) are on physical tensors: they pass through
            out = rule(apply_phys, prim, inputs, params, level, size)
        if out is None:
            return _loop(prim, inputs, params, level, size, dispatch)
        if isinstance(out, tuple):
            return tuple(None if o is None else B_.wrap(o, level) for o in out)
        return B_.wrap(out, level)

    return handler


def _loop(prim, inputs, params, level, size, dispatch):
    """The fallback: the primitive once per batch element, results stacked (a Python loop)."""
    import ember

    warnings.warn(
        f"There is a performance drop because we have not yet implemented the batching rule for "
        f"{prim.name}. Ember runs it once per batch element.",
        UserWarning,
        stacklevel=4,
    )
    results = []
    for i in range(size):
        args = tuple(x._value[i] if B_.is_batched(x, level) else x for x in inputs)
        results.append(dispatch(prim, args, params))
    if prim.inplace:
        return inputs[0]
    if isinstance(results[0], tuple):
        return tuple(
            None if results[0][j] is None else B_.wrap(ember.stack([r[j] for r in results]), level)
            for j in range(len(results[0]))
        )
    return B_.wrap(ember.stack(results), level)


def _dims_for(in_dims, args):
    """One in_dim (int or None) per leaf of ``args``; ``in_dims`` is an int/None or a tuple
    (a prefix of the args' structure: an int there applies to every leaf below it)."""
    if in_dims is None or isinstance(in_dims, int):
        return [in_dims] * len(_flatten(args)[0])
    if not isinstance(in_dims, (tuple, list)) or len(in_dims) != len(args):
        raise ValueError(
            f"vmap(f, in_dims={in_dims}, ...)(<inputs>): in_dims is not compatible with the structure of "
            f"`inputs`. in_dims has structure {type(in_dims).__name__} of length "
            f"{len(in_dims) if hasattr(in_dims, '__len__') else 1} but inputs has {len(args)} elements."
        )
    out = []
    for d, a in zip(in_dims, args):
        out += _dims_for(d, (a,)) if (d is None or isinstance(d, int)) else _dims_for(tuple(d), tuple(a))
    return out


def vmap(
    func: Callable,
    in_dims=0,
    out_dims=0,
    randomness: str = "error",
    *,
    chunk_size: int | None = None,
) -> Callable:
    """Vectorize ``func`` over a dimension of its inputs, as ``torch.func.vmap``.

    Args:
        func: a function of tensors (pytrees allowed) returning tensors.
        in_dims: the mapped dim of each input: an int (all), None (not mapped), or a tuple with
            one entry (int, None or a nested tuple) per positional argument.
        out_dims: where the batch dim goes in each output (an int, or a tuple per output).
        randomness: ``"error"`` (random ops inside raise), ``"same"`` (every batch element
            sees the same random numbers) or ``"different"`` (each its own), as PyTorch
            (``ember/func/_vmap_random.py``).
        chunk_size: run the batch in chunks of this size (less memory), results concatenated.

    Example:
        >>> import ember
        >>> from ember.func._vmap import vmap
        >>> vmap(ember.dot)(ember.ones(5, 3), ember.ones(5, 3))
        tensor([3., 3., 3., 3., 3.])
    """
    if randomness not in ("error", "same", "different"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")

    def wrapped(*args):
        import ember

        leaves, spec = _flatten(args)
        dims = _dims_for(in_dims, args)
        size = None
        phys = []
        for x, d in zip(leaves, dims):
            if d is None:
                phys.append(None)
                continue
            if not isinstance(x, Tensor):
                raise ValueError(
                    f"vmap(f, in_dims={in_dims}, ...)(<inputs>): Got in_dim={d} for an input but the input is "
                    f"of type {type(x)}. We cannot vmap over non-Tensor arguments, please use None as the "
                    "respective in_dim"
                )
            if not -x.ndim <= d < max(x.ndim, 1) or x.ndim == 0:
                raise ValueError(
                    f"vmap(f, in_dims={in_dims}, ...)(<inputs>): Got in_dim={d} for some input, but that input is "
                    f"a Tensor of dimensionality {x.ndim} so expected in_dim to satisfy -{x.ndim} <= in_dim < {x.ndim}."
                )
            p = x.movedim(d, 0)
            if size is not None and p.shape[0] != size:
                sizes = [y.shape[dd] for y, dd in zip(leaves, dims) if dd is not None]
                raise ValueError(
                    f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes {sizes} "
                    "for the mapped dimension"
                )
            size = p.shape[0]
            phys.append(p)
        if size is None:
            raise ValueError(
                f"vmap(f, in_dims={in_dims}, ...)(<inputs>): At least one of the inputs must be a Tensor "
                "with a batch dimension to vmap over"
            )
        if chunk_size is None or chunk_size >= size:
            return _run(func, leaves, phys, spec, size, out_dims, randomness)
        parts = []
        for s in range(0, size, chunk_size):
            chunk = [None if p is None else p[s : s + chunk_size] for p in phys]
            parts.append(_run(func, leaves, chunk, spec, min(chunk_size, size - s), 0, randomness))
        o_leaves0, o_spec = _flatten(parts[0])
        cols = [ember.cat([_flatten(p)[0][i] for p in parts], 0) for i in range(len(o_leaves0))]
        od = _out_dims(out_dims, len(cols))
        return _unflatten([c.movedim(0, d) for c, d in zip(cols, od)], o_spec)

    return wrapped


def _out_dims(out_dims, n):
    if isinstance(out_dims, int):
        return [out_dims] * n
    if len(out_dims) != n:
        raise ValueError(
            f"vmap(f, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with the structure of "
            f"`outputs`. out_dims has structure {type(out_dims).__name__} but outputs has {n} leaves."
        )
    return list(out_dims)


def _run(func, leaves, phys, spec, size, out_dims, randomness):
    _Level.count += 1
    level = _Level.count
    prev = mode.handler
    handler = _make_handler(level, size, prev, randomness)
    args = [x if p is None else B_.wrap(p, level) for x, p in zip(leaves, phys)]
    mode.handler = handler
    _bg.ACTIVE.append((level, size, len(_fw_state.levels)))
    try:
        result = func(*_unflatten(args, spec))
    finally:
        _bg.ACTIVE.pop()
        mode.handler = prev
    o_leaves, o_spec = _flatten(result)
    od = _out_dims(out_dims, len(o_leaves))
    outs = []
    for o, d in zip(o_leaves, od):
        if not isinstance(o, Tensor):
            raise ValueError(
                f"vmap(f, ...): `f` must only return Tensors, got type {type(o)}. Did you mean to set out_dims= "
                "to None for output?"
            )
        if B_.is_batched(o, level):
            p = o._value
        else:  # an output that does not depend on the mapped inputs: the same for every element
            p = o.unsqueeze(0).expand((size,) + tuple(o.shape))
        outs.append(p.movedim(0, d) if d != 0 else p)
    return _unflatten(outs, o_spec)
