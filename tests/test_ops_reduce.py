"""Reductions and scans against PyTorch: dims (negative, several, keepdim), dtypes, gradients.

Covers sum mean var std prod max/min (all call forms) amax amin argmax argmin logsumexp norm
any all cumsum cumprod, with the cases where gradients are subtle: ties, zeros, a zero vector.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import NonContig, check, rand
from tests.test_ops_elementwise import check_all, check_or_raise

F16, F32, F64, I32, I64, B = np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_

# (dim, keepdim) over a (2, 3, 4) input
DIMS = [(None, False), (0, False), (1, True), (-1, False), (-2, True), ((0, 2), False), ((-1, 0), True), ((), False)]


def _dim_kw(dim, keepdim):
    return {} if dim is None else {"dim": dim, "keepdim": keepdim}


REDUCERS = {
    "sum": lambda lib, x, kw: lib.sum(x, **kw),
    "mean": lambda lib, x, kw: x.mean(**kw),
    "var": lambda lib, x, kw: lib.var(x, **kw),
    "std": lambda lib, x, kw: x.std(**kw),
    "var_c0": lambda lib, x, kw: lib.var(x, correction=0, **kw),
    "std_unbiased_false": lambda lib, x, kw: lib.std(x, unbiased=False, **kw),
    "var_c2": lambda lib, x, kw: lib.var(x, correction=2, **kw),
    "amax": lambda lib, x, kw: lib.amax(x, **kw),
    "amin": lambda lib, x, kw: x.amin(**kw),
    "logsumexp": lambda lib, x, kw: lib.logsumexp(x, **(kw or {"dim": tuple(range(x.dim())) or 0})),
    "norm": lambda lib, x, kw: lib.norm(x, **kw),
    "norm_p1": lambda lib, x, kw: lib.norm(x, p=1, **kw),
    "norm_inf": lambda lib, x, kw: lib.norm(x, p=float("inf"), **kw),
    "norm_p3": lambda lib, x, kw: lib.norm(x, p=3, **kw),
    "norm_fro": lambda lib, x, kw: lib.norm(x, p="fro", **kw),
    "any": lambda lib, x, kw: lib.any(x, **kw),
    "all": lambda lib, x, kw: x.all(**kw),
}
SINGLE_DIM_ONLY = {"any", "all"}  # torch's any/all take an int dim or a tuple since 2.2


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reduce_dims(name):
    fn = REDUCERS[name]
    x = rand(2, 3, 4, dtype=F64)
    cases = []
    for dim, keepdim in DIMS:
        if dim == () and name in ("amax", "amin", "logsumexp", "norm", "norm_p1", "norm_inf", "norm_p3", "norm_fro"):
            continue  # empty dim lists mean different things per op; covered by test_empty_dim_list
        kw = _dim_kw(dim, keepdim)
        # torch's var/std backward reads dim=() as "no dims" though its forward reduces all: forward only.
        grad = not (dim == () and name.startswith(("var", "std")))
        cases.append(
            (
                f"dim={dim} keepdim={keepdim}",
                lambda kw=kw, g=grad: check_or_raise(lambda lib, a: fn(lib, a, kw), x, grad=g),
            )
        )
    cases.append(("noncontiguous", lambda: check(lambda lib, a: fn(lib, a, {"dim": 1}), NonContig(rand(4, 3)))))
    cases.append(("0-dim", lambda: check_or_raise(lambda lib, a: fn(lib, a, {}), rand(dtype=F64))))
    check_all(cases)


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "any", "all", "norm", "logsumexp", "var"])
def test_reduce_dtypes(name):
    fn = REDUCERS[name]
    cases = []
    for d in (F32, F16, I32, I64, B):
        for kw in ({}, {"dim": 1}, {"dim": (0, 1), "keepdim": True}):
            if name == "logsumexp" and not kw:
                kw = {"dim": 0}
            cases.append(
                (
                    f"{np.dtype(d).name} {kw}",
                    lambda d=d, kw=kw: check_or_raise(lambda lib, a: fn(lib, a, kw), rand(3, 4, dtype=d)),
                )
            )
    check_all(cases)


def test_sum_dtype_argument_and_int_results():
    for d in (I32, I64, B, np.uint8):
        check(lambda lib, a: a.sum(), rand(3, 4, dtype=d) if d is not np.uint8 else np.arange(12, dtype=d))
        check(
            lambda lib, a: a.sum(0), rand(3, 4, dtype=d) if d is not np.uint8 else np.arange(12, dtype=d).reshape(3, 4)
        )
    check(lambda lib, a: lib.sum(a, dtype=lib.float64), rand(3, 4))
    check(lambda lib, a: lib.sum(a, 1, dtype=lib.float32), rand(3, 4, dtype=I64))
    check(lambda lib, a: lib.mean(a, dtype=lib.float64), rand(3, 4))
    check(lambda lib, a: lib.mean(a, 0, dtype=lib.float32), rand(3, 4, dtype=I64), grad=False)
    with pytest.raises(RuntimeError):
        ember.mean(ember.tensor([1, 2]))


def test_empty_dim_list():
    # An empty dim list reduces every dim for sum/mean/amax; torch's logsumexp treats it likewise.
    x = rand(2, 3)
    check(lambda lib, a: lib.sum(a, dim=[]), x)
    check(lambda lib, a: lib.mean(a, dim=()), x)
    check(lambda lib, a: lib.amax(a, dim=()), x)
    check(lambda lib, a: lib.amin(a, dim=[]), x)


def test_empty_inputs():
    e = np.zeros((0, 3), dtype=F32)
    check(lambda lib, a: a.sum(0), e)
    check(lambda lib, a: a.sum(), e)
    check(lambda lib, a: a.prod(0), e)
    check(lambda lib, a: a.mean(0), e, grad=False)
    for lib in (ember, torch):
        with pytest.raises(IndexError):
            lib.tensor(e).amax(0)
        with pytest.raises((RuntimeError, IndexError)):
            lib.tensor(e).argmax()


def test_var_std_edge_cases():
    check(lambda lib, a: a.var(), rand(1, dtype=F64), grad=False)  # n - 1 = 0 -> nan (with warning in torch)
    check(lambda lib, a: a.std(0, keepdim=True), rand(5, 3, dtype=F64))
    check(lambda lib, a: lib.var_mean(a, 1), rand(3, 4, dtype=F64))
    check(lambda lib, a: lib.std_mean(a, dim=0, correction=0), rand(3, 4, dtype=F64))
    check(lambda lib, a: a.var(0, unbiased=True), rand(3, 4, dtype=F64))
    check(lambda lib, a: a.var(0, False), rand(3, 4, dtype=F64))


# --------------------------------------------------------------------------- prod
PROD_INPUTS = {
    "no_zeros": np.array([[1.5, -2.0, 0.5], [3.0, 1.0, -1.0]]),
    "one_zero": np.array([[1.5, 0.0, 0.5], [3.0, 1.0, -1.0]]),
    "two_zeros": np.array([[0.0, 0.0, 0.5], [3.0, 0.0, -1.0]]),
}


@pytest.mark.parametrize("which", list(PROD_INPUTS))
def test_prod(which):
    x = PROD_INPUTS[which]
    check_all(
        [
            (f"dim={kw}", lambda kw=kw: check(lambda lib, a: lib.prod(a, **kw), x))
            for kw in ({}, {"dim": 0}, {"dim": 1}, {"dim": -1, "keepdim": True})
        ]
        + [
            ("noncontig", lambda: check(lambda lib, a: a.prod(1), NonContig(x))),
            ("int", lambda: check(lambda lib, a: a.prod(0), x.astype(I32))),
            ("bool", lambda: check(lambda lib, a: a.prod(), x.astype(B))),
            ("dtype", lambda: check(lambda lib, a: a.prod(dtype=lib.float64), x.astype(F32))),
        ]
    )


# --------------------------------------------------------------------------- max / min
TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 5.0, 4.0, 5.0]])


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_call_forms(op):
    x = rand(3, 4, dtype=F64)
    y = rand(3, 4, dtype=F64) + 0.1
    check_all(
        [
            ("full", lambda: check(lambda lib, a: getattr(lib, op)(a), x)),
            ("dim", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), x)),
            ("dim_kw", lambda: check(lambda lib, a: getattr(a, op)(dim=-1, keepdim=True), x)),
            ("named", lambda: check(lambda lib, a: getattr(lib, op)(a, 0).values * 2, x)),
            ("indices", lambda: check(lambda lib, a: getattr(lib, op)(a, 0).indices, x)),
            ("binary", lambda: check(lambda lib, a, b: getattr(lib, op)(a, b), x, y)),
            ("binary_broadcast", lambda: check(lambda lib, a, b: getattr(a, op)(b), x, y[0])),
            ("ties_full", lambda: check(lambda lib, a: getattr(lib, op)(a), TIES)),
            ("ties_dim", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), TIES)),
            ("ties_dim0", lambda: check(lambda lib, a: getattr(lib, op)(a, 0, keepdim=True), TIES)),
            ("int", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), rand(3, 4, dtype=I32))),
            ("bool", lambda: check(lambda lib, a: getattr(lib, op)(a), rand(3, 4, dtype=B))),
            ("0dim", lambda: check(lambda lib, a: getattr(lib, op)(a, 0), np.array(2.5))),
            ("noncontig", lambda: check(lambda lib, a: getattr(lib, op)(a, 0), NonContig(rand(4, 3)))),
        ]
    )


@pytest.mark.parametrize("op", ["amax", "amin"])
def test_amax_amin_ties_split_gradient(op):
    check(lambda lib, a: getattr(lib, op)(a), TIES)
    check(lambda lib, a: getattr(lib, op)(a, 1), TIES)
    check(lambda lib, a: getattr(lib, op)(a, (0, 1), keepdim=True), TIES)
    check(lambda lib, a: getattr(lib, op)(a, 0), TIES)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin(op):
    check_all(
        [
            (str(kw), lambda kw=kw, x=x: check_or_raise(lambda lib, a: getattr(lib, op)(a, **kw), x))
            for x in (TIES, rand(2, 3, 4), rand(3, 4, dtype=I32), rand(3, 4, dtype=B), NonContig(rand(4, 3)))
            for kw in ({}, {"dim": 1}, {"dim": -1, "keepdim": True}, {"dim": 0}, {"keepdim": True})
        ]
        + [("0dim", lambda: check(lambda lib, a: getattr(lib, op)(a), np.array(1.0)))]
    )


def test_aminmax_cummax():
    check(lambda lib, a: tuple(lib.aminmax(a)), TIES)
    check(lambda lib, a: tuple(lib.aminmax(a, dim=1)), TIES, grad=False)
    check(lambda lib, a: tuple(lib.cummax(a, 1)), rand(3, 5))


# --------------------------------------------------------------------------- logsumexp / norm
def test_logsumexp_stability():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0]])
    check(lambda lib, a: lib.logsumexp(a, 1), x[:1])
    check(lambda lib, a: lib.logsumexp(a, 1), x, grad=False)
    check(lambda lib, a: lib.logsumexp(a, 0), rand(3, 4, dtype=I64))


@pytest.mark.parametrize("p", [2, 1, float("inf"), -float("inf"), 3, 0.5, "fro", 0])
def test_norm_values_and_zero_vector_gradient(p):
    x = rand(3, 4, dtype=F64)
    zero = np.zeros((2, 3))
    check(lambda lib, a: lib.norm(a, p), x)
    check(lambda lib, a: lib.norm(a, p, dim=1, keepdim=True), x)
    # At the zero vector, torch defines the gradient as 0 for p = 2, 1, inf (subgradient)
    if p in (2, "fro", 1, float("inf"), 0):
        check(lambda lib, a: lib.norm(a, p), zero)
        check(lambda lib, a: lib.norm(a, p, dim=1), np.array([[0.0, 0.0], [3.0, -4.0]]))


def test_norm_errors():
    with pytest.raises(RuntimeError):
        ember.norm(ember.tensor([1, 2]))


def test_linalg_vector_norm():
    for kw in ({}, {"ord": 1, "dim": 1}, {"ord": float("inf"), "dim": (0, 1), "keepdim": True}):
        check(lambda lib, a, kw=kw: lib.linalg.vector_norm(a, **kw), rand(3, 4))


# --------------------------------------------------------------------------- scans
@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
def test_scans(op):
    x = rand(3, 4, dtype=F64)
    check_all(
        [(f"dim={d}", lambda d=d: check(lambda lib, a: getattr(lib, op)(a, d), x)) for d in (0, 1, -1, -2)]
        + [
            ("noncontig", lambda: check(lambda lib, a: getattr(a, op)(0), NonContig(rand(4, 3)))),
            ("0dim", lambda: check(lambda lib, a: getattr(lib, op)(a, 0), np.array(1.5))),
            ("int", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), rand(3, 4, dtype=I32))),
            ("bool", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), rand(3, 4, dtype=B))),
            ("dtype", lambda: check(lambda lib, a: getattr(lib, op)(a, 1, dtype=lib.float64), rand(3, 4))),
            ("zeros", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), PROD_INPUTS["two_zeros"])),
            ("one_zero", lambda: check(lambda lib, a: getattr(lib, op)(a, 1), PROD_INPUTS["one_zero"])),
        ]
    )


def test_reduce_errors():
    x = ember.ones(2, 3)
    for fn in (lambda: x.sum(2), lambda: x.amax(-3), lambda: x.cumsum(5), lambda: x.argmax(2)):
        with pytest.raises(IndexError):
            fn()
    with pytest.raises(RuntimeError):
        x.sum((0, 0))
