"""``ember.func.jvp`` and ``ember.func.jacfwd``: forward-mode transforms, as in ``torch.func``.

Both run the function once per tangent inside a forward-AD level
(``ember.autograd.forward_ad``): the primals become dual tensors, every op computes its
output's tangent through its primitive's JVP rule at the dispatch point, and the outputs'
tangents are read back. ``jacfwd`` pushes one basis tangent per input element (columns of the
Jacobian), all at once under ``vmap``. Inputs and outputs may be pytrees (nested tuples, lists and dicts of tensors).

Example:
    >>> import ember
    >>> from ember.func._jvp import jvp
    >>> jvp(lambda x: x * x, (ember.tensor([1.0, 2.0]),), (ember.tensor([1.0, 1.0]),))[1]
    tensor([2., 4.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ember.autograd.forward_ad as fwAD
from ember.tensor import Tensor

__all__ = ["jvp", "jacfwd"]


def _flatten(tree) -> tuple[list, Any]:
    """Leaves of a pytree (tuples, lists, dicts) and a spec to rebuild it."""
    if isinstance(tree, (tuple, list)):
        leaves, specs = [], []
        for x in tree:
            lv, sp = _flatten(x)
            leaves += lv
            specs.append((len(lv), sp))
        return leaves, (type(tree), specs)
    if isinstance(tree, dict):
        leaves, specs = [], []
        for k, x in tree.items():
            lv, sp = _flatten(x)
            leaves += lv
            specs.append((k, len(lv), sp))
        return leaves, (dict, specs)
    return [tree], None


def _unflatten(leaves: list, spec):
    if spec is None:
        return leaves[0]
    kind, specs = spec
    out, i = [], 0
    if kind is dict:
        d = {}
        for k, n, sp in specs:
            d[k] = _unflatten(leaves[i : i + n], sp)
            i += n
        return d
    for n, sp in specs:
        out.append(_unflatten(leaves[i : i + n], sp))
        i += n
    return kind(out) if kind is not list else out


def _check_tensors(leaves, what: str, api: str) -> None:
    for x in leaves:
        if not isinstance(x, Tensor):
            raise RuntimeError(f"{api}: Expected {what} to only contain Tensors, got {type(x).__name__}")


def jvp(func: Callable, primals, tangents, *, strict: bool = False, has_aux: bool = False):
    """``(func(*primals), J(primals) @ tangents)``, forward mode, as ``torch.func.jvp``.

    Args:
        func: a function of tensors (pytrees allowed) returning tensors.
        primals: a tuple of ``func``'s positional arguments.
        tangents: a tuple of the same structure and shapes as ``primals``.
        has_aux: ``func`` returns ``(output, aux)``; ``aux`` is returned as a third element.

    Example:
        >>> import ember
        >>> from ember.func._jvp import jvp
        >>> out, jv = jvp(ember.sin, (ember.tensor([0.0]),), (ember.tensor([2.0]),))
        >>> jv
        tensor([2.])
    """
    api = "jvp(f, primals, tangents)"
    if not isinstance(primals, tuple):
        raise RuntimeError(f"{api}: Expected primals to be a tuple. E.g. it should be valid to call f(*primals).")
    if not isinstance(tangents, tuple):
        raise RuntimeError(f"{api}: Expected tangents to be a tuple. E.g. it should be valid to call f(*primals).")
    p_leaves, p_spec = _flatten(primals)
    t_leaves, t_spec = _flatten(tangents)
    if p_spec != t_spec:
        raise RuntimeError(f"{api}: Expected primals and tangents to have the same python structure.")
    _check_tensors(p_leaves, "primals", api)
    _check_tensors(t_leaves, "tangents", api)
    for p, t in zip(p_leaves, t_leaves):
        if tuple(p.shape) != tuple(t.shape):
            raise RuntimeError(
                f"{api}: Expected primals and tangents to have the same shape, got {list(p.shape)} and {list(t.shape)}"
            )
    with fwAD._nested_level() as level:  # levels nest: jvp of jvp, jacfwd(jacfwd(f))
        duals = [fwAD.make_dual(p, t, level=level) for p, t in zip(p_leaves, t_leaves)]
        result = func(*_unflatten(duals, p_spec))
        aux = None
        if has_aux:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(
                    "jvp(f, primals, tangents): output of function f should be a tuple: (output, aux) if has_aux is True"
                )
            result, aux = result
        o_leaves, o_spec = _flatten(result)
        _check_tensors(o_leaves, "f(*primals)'s outputs", api)
        outs, jvps = [], []
        for o in o_leaves:
            primal, tangent = fwAD.unpack_dual(o, level=level)
            outs.append(primal)
            jvps.append(tangent if tangent is not None else _zeros_like(o))
    if not any(x.requires_grad for x in p_leaves + t_leaves):
        # nothing outside tracks them: a graph made inside (jvp of grad) is not part of the result
        outs = [_detach_keep_tangents(x) for x in outs]
        jvps = [_detach_keep_tangents(x) for x in jvps]
    res = (_unflatten(outs, o_spec), _unflatten(jvps, o_spec))
    return res + (aux,) if has_aux else res


def _detach_keep_tangents(x: Tensor) -> Tensor:
    if not x.requires_grad:
        return x
    from ember.func._batching import BatchedTensor, wrap

    if isinstance(x, BatchedTensor):  # detach the physical tensor (its wrapper has no data)
        d = wrap(_detach_keep_tangents(x._value), x._level)
    else:
        d = x.detach()
    fw = x.__dict__.get("_fw")
    if fw:  # the tangents of outer jvp levels stay
        d._fw = dict(fw)
    return d


def _zeros_like(x: Tensor) -> Tensor:
    import ember

    return ember.zeros_like(x)


def jacfwd(func: Callable, argnums: int | tuple = 0, has_aux: bool = False, *, randomness: str = "error"):
    """The Jacobian of ``func`` with respect to the ``argnums`` arguments, by forward mode.

    ``jacfwd(f)(x)[i..., j...]`` is ``d f(x)[i...] / d x[j...]`` (output dims, then input dims),
    as ``torch.func.jacfwd``; a tuple ``argnums`` gives a tuple of Jacobians per output.

    Example:
        >>> import ember
        >>> from ember.func._jvp import jacfwd
        >>> jacfwd(lambda x: x ** 2)(ember.tensor([1.0, 3.0]))
        tensor([[2., 0.],
                [0., 6.]])
    """
    import ember
    from ember.func._vmap import vmap

    def wrapper(*args):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        if not nums:
            raise RuntimeError("jacfwd(f, ..., argnums): Expected argnums to be a non-empty tuple of ints")
        for n in nums:
            if not isinstance(n, int) or not -len(args) <= n < len(args):
                raise RuntimeError(
                    f"jacfwd(f, ..., argnums): Got argnums={argnums} but only {len(args)} positional inputs"
                )
        nums = tuple(n % len(args) for n in nums)
        leaves_of = {n: _flatten(args[n]) for n in nums}

        def run(tangent_for):
            # one forward pass: the tangent of every differentiated leaf given by tangent_for
            prim = tuple(args[n] for n in nums)
            tans = tuple(
                _unflatten([tangent_for(n, k, x) for k, x in enumerate(leaves_of[n][0])], leaves_of[n][1]) for n in nums
            )

            def f(*diff):
                full = list(args)
                for n, d in zip(nums, diff):
                    full[n] = d
                return func(*full)

            return jvp(f, prim, tans, has_aux=has_aux)

        zero = run(lambda n, k, x: ember.zeros_like(x))
        out = zero[0]
        aux = zero[2] if has_aux else None
        o_leaves, o_spec = _flatten(out)
        per_arg = []
        for n in nums:
            in_leaves, in_spec = leaves_of[n]
            blocks_per_in = []
            for k, x in enumerate(in_leaves):
                m = x.numel()
                if m == 0:
                    blocks = [ember.zeros(tuple(o.shape) + tuple(x.shape), dtype=o.dtype) for o in o_leaves]
                else:
                    # all basis tangents of this leaf at once: vmap over the rows of an identity
                    eye = ember.eye(m, dtype=x.dtype).reshape((m,) + tuple(x.shape))

                    def push(e, n=n, k=k):
                        tangent = lambda n2, k2, x2: e if (n2, k2) == (n, k) else ember.zeros_like(x2)  # noqa: E731
                        return tuple(_flatten(run(tangent)[1])[0])

                    cols = vmap(push)(eye)
                    blocks = [c.movedim(0, -1).reshape(tuple(o.shape) + tuple(x.shape)) for c, o in zip(cols, o_leaves)]
                blocks_per_in.append(blocks)
            # per output leaf: the input pytree of Jacobian blocks
            per_out = [_unflatten([b[i] for b in blocks_per_in], in_spec) for i in range(len(o_leaves))]
            per_arg.append(per_out)
        if isinstance(argnums, int):
            res = _unflatten(per_arg[0], o_spec)
        else:
            res = _unflatten([tuple(per_arg[a][i] for a in range(len(nums))) for i in range(len(o_leaves))], o_spec)
        if not any(x.requires_grad for n in nums for x in leaves_of[n][0] if isinstance(x, Tensor)):
            # a graph made inside (jacfwd of jacrev) is not part of the result
            r_leaves, r_spec = _flatten(res)
            res = _unflatten([_detach_keep_tangents(x) for x in r_leaves], r_spec)
        return (res, aux) if has_aux else res

    return wrapper
