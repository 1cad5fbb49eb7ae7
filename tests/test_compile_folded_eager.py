"""Eager steps inside a whole-graph program that read a constant folded by ``passes/fold.py``
(``ember/compile/program_runtime.py`` puts the constants into the env before the plan runs)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ember
from ember.compile.program_runtime import Program

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or os.environ.get("EMBER_PROGRAM") == "0",
    reason="no C compiler, or the C kernels or programs are off",
)


def _const():
    return ember.ones(3) * 2 + ember.arange(3)  # folded into one constant [2, 3, 4]


# ops without a C lowering, each reading the folded constant directly (either operand)
CASES = {
    "atan2": (lambda x: ember.atan2(x, _const()), "atan2"),
    "atan2_first": (lambda x: ember.atan2(_const(), x), "atan2"),
    "fmod": (lambda x: ember.fmod(x, _const()), "fmod"),
    "fmod_first": (lambda x: ember.fmod(_const(), x), "fmod"),
    "remainder": (lambda x: ember.remainder(x, _const()), "remainder"),
    "floor_divide": (lambda x: ember.floor_divide(_const(), x), "floor_divide"),
    "logical_and": (lambda x: ember.logical_and(x, _const()), "logical_and"),
    "logical_xor": (lambda x: ember.logical_xor(_const(), x), "logical_xor"),
    "clamp_tensor": (lambda x: ember.clamp(x, min=_const() * -1, max=_const()), "clamp_tensor"),
    "atan2_view": (lambda x: ember.atan2(_const().reshape(3, 1), x), "atan2"),  # an alias of it
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_step_reads_folded_constant(name):
    f, op = CASES[name]
    x = ember.tensor([0.5, 1.5, -2.0])
    want = f(x)
    cf = ember.compile(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "running eagerly" fallback
        got = cf(x)
        again = cf(x)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(again.numpy(), want.numpy())
    (entry,) = cf.cache.values()
    prog = entry.steps
    assert isinstance(prog, Program)
    assert [n.op for n in prog.spec.eager_nodes] == [op]
    assert any(x.kind == "constant" for kind, x in prog if kind == "node")
