"""Property tests (hypothesis): random shapes, dims and indices, compared with PyTorch.

- binary ops over random broadcast-compatible shapes: same values and gradients;
- reductions over random dims with and without keepdim;
- basic and advanced indexing reads: slices (with steps), ints, None, Ellipsis, integer arrays
  and boolean masks.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ember
from tests.helpers import assert_close, check

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: start from one shape, drop leading dims, set some to 1."""
    base = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4))
    shapes = []
    for _ in range(2):
        keep = draw(st.integers(0, len(base)))
        s = list(base[len(base) - keep :])
        s = [1 if draw(st.booleans()) else d for d in s]
        shapes.append(tuple(s))
    return shapes


def _arr(shape, seed, positive=False):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5 if positive else -2, 2, size=shape)
    return np.asarray(a, dtype=np.float64)


BINARY = {
    "add": lambda lib, a, b: a + b,
    "sub": lambda lib, a, b: a - b,
    "mul": lambda lib, a, b: a * b,
    "div": lambda lib, a, b: a / b,
    "pow": lambda lib, a, b: a**b,
    "maximum": lambda lib, a, b: lib.maximum(a, b),
    "atan2": lambda lib, a, b: lib.atan2(a, b),
    "where": lambda lib, a, b: lib.where(a > b, a, b * 2),
    "lerp": lambda lib, a, b: lib.lerp(a, b, 0.25),
}


@SETTINGS
@given(shapes=broadcast_pair(), op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 1000))
def test_binary_broadcasting(shapes, op, seed):
    sa, sb = shapes
    positive = op in ("div", "pow")
    check(BINARY[op], _arr(sa, seed, positive), _arr(sb, seed + 1, positive))


REDUCE = {
    "sum": lambda lib, x, d, k: x.sum(d, keepdim=k),
    "mean": lambda lib, x, d, k: x.mean(d, keepdim=k),
    "amax": lambda lib, x, d, k: x.amax(d, keepdim=k),
    "prod": lambda lib, x, d, k: x.prod(d[0], keepdim=k),
    "var": lambda lib, x, d, k: x.var(d, keepdim=k),
    "std": lambda lib, x, d, k: x.std(d, keepdim=k, correction=0),
    "logsumexp": lambda lib, x, d, k: lib.logsumexp(x, d, keepdim=k),
    "norm": lambda lib, x, d, k: x.norm(p=2, dim=d, keepdim=k),
    "max": lambda lib, x, d, k: x.max(d[0], keepdim=k),
    "argmin": lambda lib, x, d, k: x.argmin(d[0], keepdim=k),
    "cumsum": lambda lib, x, d, k: x.cumsum(d[0]),
}


@st.composite
def shape_and_dims(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    n = len(shape)
    dims = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=n, unique_by=lambda d: d % n))
    return shape, tuple(dims)


@SETTINGS
@given(sd=shape_and_dims(), op=st.sampled_from(sorted(REDUCE)), keepdim=st.booleans(), seed=st.integers(0, 1000))
def test_reductions(sd, op, keepdim, seed):
    shape, dims = sd
    x = _arr(shape, seed)
    if op == "var":  # at least two elements per group for a finite unbiased variance
        n = int(np.prod([shape[d] for d in dims]))
        if n < 2:
            return
    check(lambda lib, a: REDUCE[op](lib, a, dims, keepdim), x)


# --------------------------------------------------------------------------- indexing reads
@st.composite
def index_expr(draw):
    """A random index for a tensor of random shape: a tuple of basic and advanced parts."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    parts = []
    dim = 0
    used_ellipsis = False
    n_parts = draw(st.integers(1, len(shape) + 1))
    for _ in range(n_parts):
        kind = draw(st.sampled_from(["int", "slice", "none", "ellipsis", "array", "mask"]))
        if dim >= len(shape) and kind not in ("none",):
            break
        size = shape[dim] if dim < len(shape) else 1
        if kind == "int":
            parts.append(draw(st.integers(-size, size - 1)))
            dim += 1
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)))
            step = draw(st.one_of(st.none(), st.integers(1, 3)))
            parts.append(slice(start, stop, step))
            dim += 1
        elif kind == "none":
            parts.append(None)
        elif kind == "ellipsis" and not used_ellipsis:
            parts.append(Ellipsis)
            used_ellipsis = True
            dim = len(shape)  # the ellipsis may take every remaining dim
        elif kind == "array":
            n = draw(st.integers(1, 4))
            parts.append(np.array(draw(st.lists(st.integers(-size, size - 1), min_size=n, max_size=n))))
            dim += 1
        elif kind == "mask":
            parts.append(np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size))))
            dim += 1
    return shape, tuple(parts)


def _convert_index(lib, idx):
    return tuple(lib.tensor(p) if isinstance(p, np.ndarray) else p for p in idx)


@SETTINGS
@given(expr=index_expr(), seed=st.integers(0, 1000))
def test_indexing_reads(expr, seed):
    shape, idx = expr
    x = _arr(shape, seed)
    try:
        expected = torch.tensor(x)[_convert_index(torch, idx)]
    except (IndexError, RuntimeError) as exc:
        # Several advanced indices that do not broadcast together: Ember must refuse too.
        try:
            ember.tensor(x)[_convert_index(ember, idx)]
        except (IndexError, RuntimeError):
            return
        raise AssertionError(f"torch raised {type(exc).__name__} for {idx} on {shape}, ember did not") from None
    got = ember.tensor(x)[_convert_index(ember, idx)]
    assert_close(got, expected, what=f"x{list(shape)}[{idx}]")
    # And the gradient of a read scatters back (accumulating on repeated integer indices).
    check(lambda lib, a: a[_convert_index(lib, idx)] * 2, x)


@SETTINGS
@given(shapes=broadcast_pair(), seed=st.integers(0, 1000))
def test_type_promotion_random_dtypes(shapes, seed):
    rng = np.random.default_rng(seed)
    dtypes = [np.float32, np.float64, np.int32, np.int64, np.bool_, np.float16]
    da, db = rng.choice(len(dtypes), 2)
    sa, sb = shapes
    a = np.asarray(rng.uniform(-3, 3, size=sa) * 2).astype(dtypes[da])
    b = np.asarray(rng.uniform(-3, 3, size=sb) * 2).astype(dtypes[db])
    check(lambda lib, x, y: x * y, a, b, grad=False)
    check(lambda lib, x, y: lib.maximum(x, y), a, b, grad=False)
    check(lambda lib, x, y: x < y, a, b, grad=False)
