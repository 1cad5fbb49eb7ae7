"""Matrix products: ``matmul`` (with PyTorch's 1-D and batch-broadcast rules), ``einsum`` and friends.

``matmul`` calls NumPy's, which hands 2-D and batched products to BLAS; its gradient is two more
matmuls. ``einsum``'s gradient for each operand is another einsum (plus a diagonal embedding when
an operand repeats a subscript).
"""

from __future__ import annotations

import string

import numpy as np

from ember._lowp import f32_compute
from ember.amp import state as amp_state
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.ops._base import Tensor, check_tensor
from ember.ops.dispatch import Primitive, apply, apply2
from ember.ops.dispatch_fast import matmul2d
from ember.ops.elementwise import sum_to  # (Matmul.backward: not a function-level import, 1 us a call)
from ember.ops.movement import reshape, unsqueeze

__all__ = [
    "addmm",
    "addmv",
    "baddbmm",
    "bmm",
    "dot",
    "einsum",
    "ger",
    "inner",
    "matmul",
    "mm",
    "mv",
    "outer",
    "tensordot",
    "vdot",
]

_AMP_USED = amp_state.USED
_matmul = f32_compute(np.matmul)  # float16/bfloat16 accumulate in float32, as PyTorch's
_ndarray = np.ndarray
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_einsum = f32_compute(np.einsum)


class Matmul(Node):
    __slots__ = ()
    reads_inputs = "others"  # d(a@b)/da reads only b

    def backward(self, g):
        a, b = self.inputs
        if a._data.ndim == 1 and b._data.ndim == 1:  # dot product: g is 0-dim
            return (g * b if a._requires_grad else None), (g * a if b._requires_grad else None)
        a2 = unsqueeze(a, 0) if a._data.ndim == 1 else a
        b2 = unsqueeze(b, -1) if b._data.ndim == 1 else b
        g2 = g
        if a._data.ndim == 1:
            g2 = unsqueeze(g2, -2)
        if b._data.ndim == 1:
            g2 = unsqueeze(g2, -1)
        ga = gb = None
        if b._requires_grad and b._data.ndim == 2 and a._data.ndim > 2:
            # A batch of rows times one matrix (a Linear layer on (B, T, k) input): the weight
            # gradient is one (k, B*T) @ (B*T, m) product, not a batched product then a sum.
            k, m = a._data.shape[-1], g._data.shape[-1]
            gb = matmul(reshape(a, (-1, k)).mT, reshape(g, (-1, m)))
            b_done = True
        else:
            b_done = False
        if a._requires_grad:
            ga = matmul(g2, b2.mT)
            ga = reshape(sum_to(ga, a2), a._data.shape) if ga._data.shape != a._data.shape else ga
        if b._requires_grad and not b_done:
            gb = matmul(a2.mT, g2)
            gb = reshape(sum_to(gb, b2), b._data.shape) if gb._data.shape != b._data.shape else gb
        return ga, gb


def _matmul_error(a, b, op):
    sa, sb = list(a._data.shape), list(b._data.shape)
    if a._data.ndim == 2 and b._data.ndim == 2:
        return RuntimeError(f"{op}: mat1 and mat2 shapes cannot be multiplied ({sa[0]}x{sa[1]} and {sb[0]}x{sb[1]})")
    return RuntimeError(f"{op}: shapes {sa} and {sb} cannot be multiplied")


def matmul(input, other, *, out=None) -> Tensor:
    """Matrix product with broadcasting over batch dims (``input @ other``).

    Example:
        >>> import ember
        >>> (ember.ones(2, 3) @ ember.ones(3, 4)).shape
        ember.Size([2, 4])
    """
    try:  # the common call first: two float matrices that fit, no autocast, no out
        ad, bd = input._data, other._data
        dt = ad.dtype
        if (
            ad.ndim == 2
            and bd.ndim == 2
            and (dt is _F32 or dt is _F64)
            and bd.dtype is dt
            and ad.shape[1] == bd.shape[0]
            and out is None
            and not (_AMP_USED[0] and amp_state.local.active)  # thread-local read only once autocast was used
        ):
            if ad.__class__ is _ndarray and bd.__class__ is _ndarray:  # CPU (a sparse tensor's _data is none)
                return matmul2d(_MATMUL, input, other)
            if not input.is_sparse and not other.is_sparse:
                return apply2(_MATMUL, input, other)
    except AttributeError:  # not tensors: the checks below say so
        pass
    if amp_state.local.active:
        input, other = autocast_args("matmul", input, other)
    if not isinstance(input, Tensor):
        check_tensor(input, "matmul")
    if not isinstance(other, Tensor):
        check_tensor(other, "matmul", "other")
    if input.is_sparse or other.is_sparse:  # a sparse COO operand: ember/sparse
        from ember.sparse.matmul import matmul as sparse_matmul

        return sparse_matmul(input, other)
    ad, bd = input._data, other._data
    if ad.ndim == 0 or bd.ndim == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {ad.ndim}D and {bd.ndim}D")
    if ad.dtype != bd.dtype:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {input.dtype} != {other.dtype}")
    if ad.shape[-1] != bd.shape[-2 if bd.ndim > 1 else 0]:
        raise _matmul_error(input, other, "matmul")
    t = apply2(_MATMUL, input, other)
    if out is not None:
        out.copy_(t)
        return out
    return t


def _matmul_impl(input, other):
    ad, bd = input._data, other._data
    dt = ad.dtype
    if ad.__class__ is _ndarray and ad.ndim == 2 and bd.ndim == 2 and (dt is _F32 or dt is _F64):
        # shapes checked by matmul(); np.dot's 2-D path costs less per call than np.matmul, and the
        # method less than np.dot (no __array_function__ dispatch: ~0.2 us of a 4x4 product)
        return ad.dot(bd)
    try:
        if ad.ndim > 2 and bd.ndim == 2 and ad.flags.c_contiguous:
            # Rows of a batch times one matrix: one large GEMM instead of a batched loop.
            res = _matmul(ad.reshape(-1, ad.shape[-1]), bd).reshape(ad.shape[:-1] + (bd.shape[-1],))
        else:
            res = _matmul(ad, bd)
    except ValueError:
        raise _matmul_error(input, other, "matmul") from None
    return res


_MATMUL = Primitive("matmul", Matmul, _matmul_impl)


def mm(input, mat2) -> Tensor:
    """2-D matrix product."""
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm: expected 2D tensors, got {input._data.ndim}D and {mat2._data.ndim}D")
    return matmul(input, mat2)


def bmm(input, mat2) -> Tensor:
    """Batched matrix product of (b, n, m) and (b, m, p) tensors."""
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"batch1 must be a 3D tensor (got {input._data.ndim}D and {mat2._data.ndim}D)")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {list(input.shape)} and {list(mat2.shape)}")
    if input._data.shape[2] != mat2._data.shape[1]:
        raise RuntimeError(
            f"Expected size for first two dimensions of batch2 tensor to be: [{input._data.shape[0]}, "
            f"{input._data.shape[2]}] but got: [{mat2._data.shape[0]}, {mat2._data.shape[1]}]."
        )
    return matmul(input, mat2)


def mv(input, vec) -> Tensor:
    if input._data.ndim != 2 or vec._data.ndim != 1:
        raise RuntimeError("vector + matrix @ vector expected, got wrong dims for mv")
    with amp_state.suspended():  # mv is not an autocast op: its matmul runs in the inputs' dtype
        return matmul(input, vec)


def dot(input, other) -> Tensor:
    """Inner product of two 1-D tensors."""
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input._data.ndim}D and {other._data.ndim}D tensors")
    if input._data.shape != other._data.shape:
        raise RuntimeError(
            f"inconsistent tensor size, expected tensor [{input._data.shape[0]}] and src "
            f"[{other._data.shape[0]}] to have the same number of elements, but got "
            f"{input._data.shape[0]} and {other._data.shape[0]} elements respectively"
        )
    with amp_state.suspended():  # dot is not an autocast op: its matmul runs in the inputs' dtype
        return matmul(input, other)


vdot = inner = dot


def outer(input, vec2) -> Tensor:
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


ger = outer


def addmm(input, mat1, mat2, *, beta=1, alpha=1) -> Tensor:
    input, mat1, mat2 = autocast_args("addmm", input, mat1, mat2)
    prod = mm(mat1, mat2)
    if alpha != 1:
        prod = prod * alpha
    return prod + (input if beta == 1 else input * beta)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1) -> Tensor:
    input, batch1, batch2 = autocast_args("baddbmm", input, batch1, batch2)
    prod = bmm(batch1, batch2)
    if alpha != 1:
        prod = prod * alpha
    return prod + (input if beta == 1 else input * beta)


def addmv(input, mat, vec, *, beta=1, alpha=1) -> Tensor:
    return input * beta + mv(mat, vec) * alpha


def tensordot(a, b, dims=2) -> Tensor:
    """Contract ``dims`` (a count of last/first dims, or two lists of dims) of ``a`` and ``b``."""
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        da = list(range(a._data.ndim - dims, a._data.ndim))
        db = list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    if len(da) != len(db):
        raise RuntimeError("both dimension lists should have same length")
    if a.dtype is not b.dtype:
        raise RuntimeError(f"both inputs should have same dtype (got {a.dtype} and {b.dtype})")
    for i, j in zip(da, db):
        if a.shape[i] != b.shape[j]:
            raise RuntimeError(
                f"contracted dimensions need to match, but first has size {a.shape[i]} in dim {i} and second "
                f"has size {b.shape[j]} in dim {j}"
            )
    da, db = [d % a._data.ndim for d in da], [d % b._data.ndim for d in db]
    letters = iter(string.ascii_letters)
    sa = [next(letters) for _ in range(a._data.ndim)]
    sb = [next(letters) for _ in range(b._data.ndim)]
    for i, j in zip(da, db):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in da] + [c for j, c in enumerate(sb) if j not in db]
    return einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", a, b)


# --------------------------------------------------------------------------- einsum
def _parse_einsum(equation: str, shapes) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise RuntimeError(
            f"einsum(): {len(terms)} operand subscripts were given but {len(shapes)} operands were provided"
        )
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in string.ascii_letters if c not in used]
    ell_n = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = "".join(spare[:ell_n])
    subs = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            t = t.replace("...", ell[ell_n - k :] if k else "")
        if len(t) != len(s):
            raise RuntimeError(
                f"einsum(): the number of subscripts in the equation ({len(t)}) does not match the number "
                f"of dimensions ({len(s)}) for operand {len(subs)}"
            )
        subs.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts: dict = {}
        for t in subs:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    sizes: dict = {}
    for t, s in zip(subs, shapes):
        for c, n in zip(t, s):
            if sizes.setdefault(c, n) != n and n != 1 and sizes[c] != 1:
                raise RuntimeError(
                    f"einsum(): operands do not broadcast with remapped shapes (original->remapped): "
                    f"subscript '{c}' has size {sizes[c]} and {n}"
                )
    return subs, out


class Einsum(Node):
    __slots__ = ("subs", "out_sub", "equation")

    def backward(self, g):
        from ember.ops.index import index_put_zeros
        from ember.ops.movement import expand, reshape

        grads = []
        for i, x in enumerate(self.inputs):
            if not x._requires_grad:
                grads.append(None)
                continue
            target = self.subs[i]
            others = [(s, t) for j, (s, t) in enumerate(zip(self.subs, self.inputs)) if j != i]
            unique = "".join(dict.fromkeys(target))
            avail = "".join(c for c in unique if c in self.out_sub or any(c in s for s, _ in others))
            eq = ",".join([self.out_sub] + [s for s, _ in others]) + "->" + avail
            t = einsum(eq, g, *[t for _, t in others])
            sizes = dict(zip(target, x._data.shape))
            if avail != unique:  # letters summed only inside this operand: broadcast back
                t = reshape(t, [t._data.shape[avail.index(c)] if c in avail else 1 for c in unique])
                t = expand(t, [sizes[c] for c in unique])
            if unique != target:  # a repeated subscript: write onto the diagonal
                grid = np.indices([sizes[c] for c in unique], sparse=True)
                key = tuple(grid[unique.index(c)] for c in target)
                t = index_put_zeros(t, x._data.shape, key)
            grads.append(t)
        return tuple(grads)


def einsum(equation: str, *operands) -> Tensor:
    """Einstein summation, as ``torch.einsum`` (operands may also be passed as one list).

    Example:
        >>> import ember
        >>> ember.einsum("ij,jk->ik", ember.ones(2, 3), ember.ones(3, 4)).shape
        ember.Size([2, 4])
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    operands = autocast_args("einsum", *operands)
    for i, x in enumerate(operands):
        check_tensor(x, "einsum", f"operands[{i}]")
    subs, out = _parse_einsum(equation, [x._data.shape for x in operands])
    return apply(_EINSUM, *operands, subs=subs, out_sub=out, equation=equation)


def _einsum_impl(*operands, subs, out_sub, equation):
    eq = ",".join(subs) + "->" + out_sub
    try:
        return _einsum(eq, *[x._data for x in operands], optimize=len(operands) > 2 or "greedy")
    except ValueError as exc:
        raise RuntimeError(
            f"einsum(): {exc} (equation '{equation}', shapes {[list(x.shape) for x in operands]})"
        ) from None


_EINSUM = Primitive("einsum", Einsum, _einsum_impl)
