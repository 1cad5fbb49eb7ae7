"""Matrix products against PyTorch: matmul's 1-D/2-D/batched/broadcast rules, mm bmm mv dot
outer addmm baddbmm, einsum (ellipsis, implicit output, repeated subscripts, 3 operands) and
tensordot, with values and gradients of every operand."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from tests.helpers import NonContig, check, rand
from tests.test_ops_elementwise import check_all, check_or_raise

F32, F64, I64 = np.float32, np.float64, np.int64

MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3,)),
    ((3,), (5, 3, 4)),
    ((5, 2, 3), (5, 3, 4)),
    ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)),
    ((6, 1, 2, 3), (5, 3, 4)),
    ((1, 2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (1, 4, 3, 2)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_shapes(shapes):
    sa, sb = shapes
    check(lambda lib, a, b: a @ b, rand(*sa, dtype=F64), rand(*sb, dtype=F64))
    check(lambda lib, a, b: lib.matmul(a, b), rand(*sa), rand(*sb))


def test_matmul_noncontiguous_and_dtypes():
    check(lambda lib, a, b: a @ b, NonContig(rand(4, 3)), NonContig(rand(3, 5)))
    check(lambda lib, a, b: a @ b, NonContig(rand(2, 3, 4)), rand(2, 4, 5))
    check(lambda lib, a, b: a @ b, rand(3, 4, dtype=I64), rand(4, 2, dtype=I64))
    check(lambda lib, a, b: a @ b, rand(3, dtype=I64), rand(3, dtype=I64))
    # torch refuses mixed dtypes and 0-dim operands; Ember must too.
    check_or_raise(lambda lib, a, b: a @ b, rand(3, 4), rand(4, dtype=F64))
    check_or_raise(lambda lib, a, b: a @ b, rand(3, 4), np.array(2.0, dtype=F32))
    check_or_raise(lambda lib, a, b: a @ b, rand(3, 4), rand(5, 2))
    check_or_raise(lambda lib, a, b: a @ b, rand(2, 3, 4), rand(3, 4, 2))


def test_matmul_empty():
    check(lambda lib, a, b: a @ b, rand(2, 0), rand(0, 3))
    check(lambda lib, a, b: a @ b, rand(0, 3), rand(3, 2))


PRODUCTS = [
    ("mm", lambda lib, a, b: lib.mm(a, b), [(2, 3), (3, 4)]),
    ("bmm", lambda lib, a, b: lib.bmm(a, b), [(5, 2, 3), (5, 3, 4)]),
    ("mv", lambda lib, a, b: lib.mv(a, b), [(2, 3), (3,)]),
    ("dot", lambda lib, a, b: lib.dot(a, b), [(3,), (3,)]),
    ("vdot", lambda lib, a, b: lib.vdot(a, b), [(3,), (3,)]),
    ("inner", lambda lib, a, b: lib.inner(a, b), [(3,), (3,)]),
    ("outer", lambda lib, a, b: lib.outer(a, b), [(3,), (4,)]),
    ("addmm", lambda lib, c, a, b: lib.addmm(c, a, b), [(2, 4), (2, 3), (3, 4)]),
    ("addmm_bcast", lambda lib, c, a, b: lib.addmm(c, a, b, beta=0.5, alpha=2), [(4,), (2, 3), (3, 4)]),
    ("baddbmm", lambda lib, c, a, b: lib.baddbmm(c, a, b), [(5, 2, 4), (5, 2, 3), (5, 3, 4)]),
    ("baddbmm_ab", lambda lib, c, a, b: lib.baddbmm(c, a, b, beta=-1, alpha=0.5), [(2, 4), (5, 2, 3), (5, 3, 4)]),
    ("addmv", lambda lib, c, a, b: lib.addmv(c, a, b, beta=2), [(2,), (2, 3), (3,)]),
    ("method_mm", lambda lib, a, b: a.mm(b), [(2, 3), (3, 4)]),
]


@pytest.mark.parametrize("name,fn,shapes", PRODUCTS, ids=[p[0] for p in PRODUCTS])
def test_products(name, fn, shapes):
    check(fn, *[rand(*s, dtype=F64) for s in shapes])
    check(fn, *[rand(*s, dtype=F32) for s in shapes])


@pytest.mark.parametrize(
    "name,fn,shapes",
    [
        ("mm_3d", lambda lib, a, b: lib.mm(a, b), [(2, 2, 3), (3, 4)]),
        ("mm_mismatch", lambda lib, a, b: lib.mm(a, b), [(2, 3), (4, 5)]),
        ("bmm_2d", lambda lib, a, b: lib.bmm(a, b), [(2, 3), (3, 4)]),
        ("bmm_batch", lambda lib, a, b: lib.bmm(a, b), [(2, 2, 3), (3, 3, 4)]),
        ("bmm_inner", lambda lib, a, b: lib.bmm(a, b), [(2, 2, 3), (2, 4, 4)]),
        ("mv_2d", lambda lib, a, b: lib.mv(a, b), [(2, 3), (3, 1)]),
        ("dot_2d", lambda lib, a, b: lib.dot(a, b), [(2, 3), (3,)]),
        ("dot_len", lambda lib, a, b: lib.dot(a, b), [(3,), (4,)]),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_product_errors(name, fn, shapes):
    check_or_raise(fn, *[rand(*s) for s in shapes])


EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),  # implicit output
    ("ba,ac", [(3, 2), (2, 4)]),  # implicit output sorts letters
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),  # trace
    ("ij->", [(2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("i,i->", [(4,), (4,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,jk", [(5, 2, 3), (3, 4)]),
    ("i...,i->...", [(3, 2, 2), (3,)]),
    ("...,...->...", [(2, 3), (3,)]),  # broadcast over the ellipsis
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("i,ij,j->", [(3,), (3, 4), (4,)]),
    ("iij->j", [(3, 3, 2)]),
    ("iji->j", [(3, 2, 3)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij,ij->", [(2, 3), (2, 3)]),
    ("ij->i", [(2, 3)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("i j , j k -> i k", [(2, 3), (3, 4)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum(eq, shapes):
    check(lambda lib, *xs: lib.einsum(eq, *xs), *[rand(*s, dtype=F64) for s in shapes])


def test_einsum_list_operands_and_noncontig():
    check(lambda lib, a, b: lib.einsum("ij,jk->ik", [a, b]), rand(2, 3), rand(3, 4))
    check(lambda lib, a, b: lib.einsum("ij,jk->ik", a, b), NonContig(rand(2, 3)), rand(3, 4))


@pytest.mark.parametrize(
    "eq,shapes",
    [("ij,jk->ik", [(2, 3), (4, 5)]), ("ij->ik", [(2, 3)]), ("ij,jk->ik", [(2, 3)]), ("ijk->i", [(2, 3)])],
    ids=str,
)
def test_einsum_errors(eq, shapes):
    check_or_raise(lambda lib, *xs: lib.einsum(eq, *xs), *[rand(*s) for s in shapes])


TENSORDOT = [
    ((3, 4, 5), (4, 5, 6), 2),
    ((3, 4), (4, 5), 1),
    ((3, 4), (5, 6), 0),
    ((3, 4, 5), (5, 3, 2), ([0, 2], [1, 0])),
    ((3, 4, 5), (5, 2), ([2], [0])),
    ((3, 4), (4, 3), ((0, 1), (1, 0))),
]


@pytest.mark.parametrize("sa,sb,dims", TENSORDOT, ids=str)
def test_tensordot(sa, sb, dims):
    check(lambda lib, a, b: lib.tensordot(a, b, dims=dims), rand(*sa, dtype=F64), rand(*sb, dtype=F64))


def test_matmul_second_order():
    # The gradient of matmul is matmul: it must itself be differentiable.
    a = ember.tensor(rand(2, 3, dtype=F64), requires_grad=True)
    b = ember.tensor(rand(3, 4, dtype=F64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda x, y: x @ y, (a, b))
    assert ember.autograd.gradgradcheck(lambda x, y: ember.einsum("ij,jk->ik", x, y), (a, b))
    c = ember.tensor(rand(3, 3, dtype=F64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda x: ember.einsum("ii->i", x) * 2, (c,))


def test_all_pairs_vs_numpy():
    # The full matrix of 1-D/2-D/3-D combinations, forward only, against NumPy's matmul.
    cases = []
    for na in (1, 2, 3):
        for nb in (1, 2, 3):
            sa = (4, 2, 3)[-na:] if na > 1 else (3,)
            sb = (4, 3, 5)[-nb:] if nb > 1 else (3,)
            cases.append((f"{sa}@{sb}", lambda sa=sa, sb=sb: check(lambda lib, a, b: a @ b, rand(*sa), rand(*sb))))
    check_all(cases)
