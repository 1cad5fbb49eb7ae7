"""Reverse mode inside ``vmap``: ``vmap(grad(f))`` (per-sample gradients), ``vmap(vjp)``, ``vmap(jacrev)``.

Inside ``vmap`` every op on batched tensors runs as one op on the physical tensors (batch dims
first), and the graph of reverse mode is recorded on those physical tensors. The samples of a
batch never mix (each op is the same op per sample), so the gradient of the *sum* of the
physical outputs with respect to a physical leaf is, row by row, each sample's own gradient.
``grad`` inside ``vmap`` therefore lifts its inputs to physical leaves with the batch dims of
every open ``vmap`` level (an input that is not batched, such as the parameters in
``vmap(grad(loss), in_dims=(None, 0, 0))``, is expanded, so each sample gets its own gradient
row), runs ``f``, and takes one ``ember.autograd.grad`` of the physical outputs; the gradients
are wrapped back as batched tensors. No loop over the batch: the backward of a batched op is
the backward of the physical op.
"""

from __future__ import annotations

from ember.func import _batching as B_
from ember.tensor import Tensor

__all__ = ["ACTIVE", "active", "lift", "lower", "grads", "inplace"]

#: The open ``vmap`` levels, outermost first: (level, batch size, forward-AD levels open at entry).
ACTIVE: list = []


def active() -> list:
    """The vmap levels above the innermost open forward-AD level (all, with none open), innermost
    first. A ``jvp`` level opened inside ``vmap`` (``jacfwd``'s own vmap, in ``jacfwd(jacrev(f))``)
    keeps reverse mode at its own depth: the graph's tensors carry its tangents there."""
    from ember.autograd.forward_ad import _state

    n = len(_state.levels)
    return [(lvl, size) for lvl, size, k in reversed(ACTIVE) if k == n]


def _expand(x: Tensor, size: int) -> Tensor:
    return x.unsqueeze(0).expand((size,) + tuple(x.shape))


def _unwrap(x: Tensor, levels: list) -> Tensor:
    """``x``'s physical tensor with the batch dims of all ``levels`` (unbatched ones expanded)."""
    for lvl, size in levels:
        x = x._value if B_.is_batched(x, lvl) else _expand(x, size)
    return x


def _rewrap(p: Tensor, levels: list) -> Tensor:
    for lvl, _size in reversed(levels):
        p = B_.wrap(p, lvl)
    return p


def lift(x, levels: list, plain_lift):
    """``x`` as a batched tensor over every level whose physical tensor is a fresh leaf."""
    if not isinstance(x, Tensor):
        return x
    return _rewrap(plain_lift(_unwrap(x, levels)), levels)


def lower(x, keep: bool, plain_lower):
    """``plain_lower`` (detach unless an outer computation needs the graph) on the physical tensor."""
    if isinstance(x, B_.BatchedTensor):
        out = B_.wrap(lower(x._value, keep, plain_lower), x._level)
        fw = x.__dict__.get("_fw")
        if fw:  # tangents of jvp levels opened above this vmap level live on the wrapper
            out._fw = dict(fw)
        return out
    return plain_lower(x, keep)


def grads(outputs, inputs, cotangents, levels: list) -> list:
    """Per-sample gradients of ``outputs`` at the lifted ``inputs`` (batched), graph kept."""
    from ember.autograd import grad as autograd_grad
    from ember.ops.creation import ones_like, zeros_like

    outs, cots = [], []
    for o, c in zip(outputs, cotangents):
        if not isinstance(o, Tensor):
            continue
        po = _unwrap(o, levels)
        if not po.requires_grad:
            continue
        outs.append(po)
        cots.append(ones_like(po) if c is None else _unwrap(c, levels))
    phys_in = [_unwrap(x, levels) if isinstance(x, Tensor) else None for x in inputs]
    wanted = [i for i, p in enumerate(phys_in) if p is not None and p.requires_grad]
    got = [None] * len(inputs)
    if outs and wanted:
        res = autograd_grad(
            outs, [phys_in[i] for i in wanted], cots, retain_graph=True, create_graph=True, allow_unused=True
        )
        for i, g in zip(wanted, res):
            got[i] = g
    return [None if p is None else _rewrap(zeros_like(p) if g is None else g, levels) for g, p in zip(got, phys_in)]


def inplace(self, fn):
    """An in-place op on a batched tensor that has history (reverse mode inside vmap): the new
    value is computed out of place (recorded on the physical tensors) and becomes the batched
    tensor's physical value; the old physical memory gets the values too, for its aliases."""
    from ember.autograd.grad_mode import no_grad

    res = fn(self)
    lvl = self._level
    size = next(s for level, s, _k in ACTIVE if level == lvl)
    new = res._value if B_.is_batched(res, lvl) else _expand(res, size)
    old = self._value
    if tuple(old.shape) == tuple(new.shape) and not isinstance(old, B_.BatchedTensor):
        if old._base is not None:
            # a view of a physical base: an in-place copy records the write on the base's
            # history too (the view machinery), so the base's gradient sees the update
            old.copy_(new)
            return self
        with no_grad():
            old._data[...] = new._data
    self._value = new
    return self
