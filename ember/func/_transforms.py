"""``grad``, ``grad_and_value``, ``vjp``, ``jacrev`` and ``hessian`` on reverse-mode autograd."""

from __future__ import annotations

import functools

from ember.autograd import grad as _autograd_grad
from ember.autograd.grad_mode import enable_grad
from ember.func import _batched_grad as _bg
from ember.func._batching import BatchedTensor
from ember.func._pytree import tree_flatten, tree_map, tree_unflatten
from ember.tensor import Tensor

__all__ = ["grad", "grad_and_value", "vjp", "jacrev", "hessian"]


def _lift(x):
    """A fresh differentiable version of ``x``: a view when an outer computation tracks it (so
    the result stays connected to it), else a detached leaf that requires grad. Inside ``vmap``
    the leaf is the physical tensor with the batch dims (``ember/func/_batched_grad.py``)."""
    levels = _bg.active()
    if levels:
        return _bg.lift(x, levels, _lift_plain)
    return _lift_plain(x)


def _lift_plain(x):
    if not isinstance(x, Tensor):
        return x
    if isinstance(x, BatchedTensor):
        raise NotImplementedError(
            "reverse mode of an input batched by a vmap outside a forward-mode transform (vmap(jvp(grad(f))), "
            "vmap(hessian(f))) is not supported; use vmap(jacrev(jacrev(f))) for per-sample Hessians"
        )
    if x.requires_grad:
        return x.view_as(x)
    leaf = x.detach().requires_grad_(True)
    fw = x.__dict__.get("_fw")
    if fw:  # forward over reverse (jvp of grad): the leaf keeps the tangents of open jvp levels
        leaf._fw = dict(fw)
    return leaf


def _lower(x, keep: bool):
    """Results are detached unless an outer computation needs their graph."""
    if isinstance(x, BatchedTensor):
        return _bg.lower(x, keep, _lower)
    if isinstance(x, Tensor) and not keep:
        d = x.detach()
        fw = x.__dict__.get("_fw")
        if fw:  # tangents of open jvp levels stay (forward over reverse)
            d._fw = dict(fw)
        return d
    return x


def _check_argnums(argnums, n_args: int, api: str):
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    if isinstance(argnums, tuple) and not argnums:
        raise RuntimeError(f"{api}: argnums must be non-empty")
    for a in nums:
        if not isinstance(a, int):
            raise RuntimeError(f"{api}: argnums must be int or Tuple[int, ...], got: {type(argnums)}")
        if not -n_args <= a < n_args:
            raise RuntimeError(f"Got argnum={a}, but only {n_args} positional inputs")
    return tuple(a % n_args for a in nums)


def _grads(outputs, inputs, cotangents, keep):
    """Gradients of ``outputs`` at ``inputs`` (zeros where independent), graph kept for nesting."""
    from ember.ops.creation import zeros_like

    levels = _bg.active()
    if levels and any(isinstance(x, BatchedTensor) for x in list(outputs) + list(inputs)):
        got = _bg.grads(outputs, inputs, cotangents, levels)
        return [_lower(zeros_like(x) if g is None else g, keep) for g, x in zip(got, inputs)]
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if isinstance(o, Tensor) and o.requires_grad]
    wanted = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    got = [None] * len(inputs)
    if pairs and wanted:
        res = _autograd_grad(
            [o for o, _ in pairs],
            [inputs[i] for i in wanted],
            [c for _, c in pairs],
            retain_graph=True,
            create_graph=True,
            allow_unused=True,
        )
        for i, g in zip(wanted, res):
            got[i] = g
    return [_lower(zeros_like(x) if g is None else g, keep) for g, x in zip(got, inputs)]


def grad_and_value(func, argnums=0, has_aux: bool = False):
    """Like :func:`grad`, but the new function returns ``(gradient, value)``
    (``(gradient, (value, aux))`` with ``has_aux``).

    Example:
        >>> import ember
        >>> from ember.func import grad_and_value
        >>> g, v = grad_and_value(lambda x: (x * x).sum())(ember.tensor([1.0, 2.0]))
        >>> g, v
        (tensor([2., 4.]), tensor(5.))
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        api = "grad_and_value(f)(*args)"
        nums = _check_argnums(argnums, len(args), api)
        args = list(args)
        trees = {}
        for a in nums:
            leaves, spec = tree_flatten(args[a])
            lifted = [_lift(x) for x in leaves]
            trees[a] = (leaves, lifted, spec)
            args[a] = tree_unflatten(lifted, spec)
        keep = any(isinstance(x, Tensor) and x.requires_grad for a in nums for x in trees[a][0])
        with enable_grad():
            out = func(*args, **kwargs)
            aux = None
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise RuntimeError(
                        f"{api}: output of function f should be a tuple: (output, aux) if has_aux is True"
                    )
                out, aux = out
            if not isinstance(out, Tensor):
                raise RuntimeError(f"{api}: Expected f(*args) to return a Tensor, got {type(out)}")
            if out.dim() != 0:
                raise RuntimeError(
                    f"{api}: Expected f(*args) to return a scalar Tensor, got tensor with {out.dim()} dims. "
                    "Maybe you wanted to use the vjp or jacrev APIs instead?"
                )
            flat_in = [x for a in nums for x in trees[a][1]]
            flat_g = _grads([out], flat_in, [None], keep)
        grads, pos = [], 0
        for a in nums:
            leaves, _, spec = trees[a]
            grads.append(tree_unflatten(flat_g[pos : pos + len(leaves)], spec))
            pos += len(leaves)
        g = tuple(grads) if isinstance(argnums, tuple) else grads[0]
        value = _lower(out, keep)
        if has_aux:
            return g, (value, tree_map(lambda x: _lower(x, keep), aux))
        return g, value

    return wrapper


def grad(func, argnums=0, has_aux: bool = False):
    """The gradient of a scalar function with respect to argument(s) ``argnums``.

    ``grad(f)(x)`` has the structure of ``x`` (a tensor or a pytree); with a tuple ``argnums`` the
    result is a tuple, one entry per argument; with ``has_aux``, ``f`` returns ``(output, aux)``
    and the new function returns ``(gradient, aux)``. Transforms nest: ``grad(grad(f))``.

    Example:
        >>> import ember
        >>> from ember.func import grad
        >>> x = ember.tensor(0.5)
        >>> grad(grad(ember.sin))(x).item() == -ember.sin(x).item()
        True
    """
    gv = grad_and_value(func, argnums, has_aux)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        g, value = gv(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapper


def vjp(func, *primals, has_aux: bool = False):
    """``(func(*primals), vjp_fn)``: ``vjp_fn(cotangents)`` gives one gradient per primal.

    Example:
        >>> import ember
        >>> from ember.func import vjp
        >>> out, vjp_fn = vjp(ember.sin, ember.tensor([0.0, 1.0]))
        >>> vjp_fn(ember.ones(2))[0]
        tensor([1.0000, 0.5403])
    """
    flat_p, spec_p = tree_flatten(primals)
    keep = any(isinstance(x, Tensor) and x.requires_grad for x in flat_p)
    lifted = [_lift(x) for x in flat_p]
    with enable_grad():
        out = func(*tree_unflatten(lifted, spec_p))
    aux = None
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise RuntimeError(
                "vjp(f, *primals): output of function f should be a tuple: (output, aux) if has_aux is True"
            )
        out, aux = out
    flat_out, spec_out = tree_flatten(out)
    for o in flat_out:
        if not isinstance(o, Tensor):
            raise RuntimeError(
                f"vjp(f, *primals): Expected f(*primals) to return only tensors, got unsupported type {type(o)}"
            )

    def vjp_fn(*cotangents):
        cots = cotangents[0] if len(cotangents) == 1 and not isinstance(out, tuple) else cotangents
        flat_c, spec_c = tree_flatten(cots)
        if len(flat_c) != len(flat_out):
            raise RuntimeError(
                "Expected pytree structure of cotangents to be the same as pytree structure of outputs to the "
                f"function. cotangents: {spec_c}, primal output: {spec_out}"
            )
        for c, o in zip(flat_c, flat_out):
            if tuple(c.shape) != tuple(o.shape):
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[0] has a shape of {c.shape} and output[0] has a shape of {o.shape}."
                )
        with enable_grad():
            flat_g = _grads(flat_out, lifted, flat_c, keep or any(c.requires_grad for c in flat_c))
        return tree_unflatten(flat_g, spec_p)

    out_ret = tree_unflatten([_lower(o, keep) for o in flat_out], spec_out)
    if has_aux:
        return out_ret, vjp_fn, tree_map(lambda x: _lower(x, keep), aux)
    return out_ret, vjp_fn


def jacrev(func, argnums=0, *, has_aux: bool = False, chunk_size=None, _preallocate_and_copy: bool = False):
    """The Jacobian by reverse mode: entry shape ``output.shape + input.shape``.

    One reverse pass per output element (``chunk_size`` is accepted; rows are computed one at a
    time either way). A tuple ``argnums`` gives a tuple per output; a pytree output gives the same
    pytree of Jacobians.

    Example:
        >>> import ember
        >>> from ember.func import jacrev
        >>> jacrev(lambda x: x ** 2)(ember.tensor([1.0, 3.0]))
        tensor([[2., 0.],
                [0., 6.]])
    """
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ember.ops.creation import zeros
        from ember.ops.movement import stack

        nums = _check_argnums(argnums, len(args), "jacrev(f)(*args)")
        args = list(args)
        trees = {}
        for a in nums:
            leaves, spec = tree_flatten(args[a])
            lifted = [_lift(x) for x in leaves]
            trees[a] = (leaves, lifted, spec)
            args[a] = tree_unflatten(lifted, spec)
        flat_in = [x for a in nums for x in trees[a][1]]
        keep = any(isinstance(x, Tensor) and x.requires_grad for a in nums for x in trees[a][0])
        with enable_grad():
            out = func(*args, **kwargs)
            aux = None
            if has_aux:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise RuntimeError(
                        "jacrev(f)(*args): output of function f should be a tuple: (output, aux) if has_aux is True"
                    )
                out, aux = out
            flat_out, spec_out = tree_flatten(out)
            jac_per_out = []
            for o in flat_out:
                if not isinstance(o, Tensor):
                    raise RuntimeError(
                        f"jacrev(f)(*args): Expected f(*args) to return only tensors, got unsupported type {type(o)}"
                    )
                n = o.numel()
                rows = []
                for j in range(n):
                    onehot = zeros(n, dtype=o.dtype)
                    onehot._data[j] = 1
                    rows.append(_grads([o], flat_in, [onehot.reshape(o.shape)], True))
                per_in = []
                for k, x in enumerate(flat_in):
                    col = stack([r[k] for r in rows], 0) if rows else zeros(0, *x.shape, dtype=x.dtype)
                    per_in.append(_lower(col.reshape(tuple(o.shape) + tuple(x.shape)), keep))
                grouped, pos = [], 0
                for a in nums:
                    leaves, _, spec = trees[a]
                    grouped.append(tree_unflatten(per_in[pos : pos + len(leaves)], spec))
                    pos += len(leaves)
                jac_per_out.append(tuple(grouped) if isinstance(argnums, tuple) else grouped[0])
        result = tree_unflatten(jac_per_out, spec_out)
        if has_aux:
            return result, tree_map(lambda x: _lower(x, keep), aux)
        return result

    return wrapper


def hessian(func, argnums=0):
    """The Hessian of a scalar function: ``jacfwd(jacrev(func, argnums), argnums)``, as PyTorch
    composes it (forward mode over reverse mode).

    Example:
        >>> import ember
        >>> from ember.func import hessian
        >>> hessian(lambda x: (x ** 3).sum())(ember.tensor([1.0, 2.0]))
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    from ember.func._jvp import jacfwd

    return jacfwd(jacrev(func, argnums), argnums)
