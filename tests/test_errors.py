"""Bad input gets PyTorch's error type, and a message that names the op and the shapes involved.

Each case runs on ember and on torch: both must raise the same exception type; ember's message
must contain the listed fragments (the shapes or sizes, so a user can see what went wrong).
"""

from __future__ import annotations

import pytest
import torch

import ember


def _leaf(L):
    return L.ones(3, requires_grad=True)


def _freed(L):
    x = _leaf(L)
    y = (x * x).sum()
    y.backward()
    y.backward()


def _version(L):
    x = _leaf(L)
    y = x.exp()
    y.add_(1)
    y.sum().backward()


def _version_mul(L):
    x = _leaf(L)
    y = x * 1
    z = y * y
    y.mul_(2)
    z.sum().backward()


def _leaf_inplace(L):
    _leaf(L).add_(1)


def _leaf_setitem(L):
    w = _leaf(L)
    w[0] = 2.0


# name: (fn(L), exception type, fragments ember's message must contain)
CASES = {
    "matmul_2d": (lambda L: L.ones(2, 3) @ L.ones(4, 5), RuntimeError, ["2x3", "4x5"]),
    "matmul_batched": (lambda L: L.ones(2, 3, 4) @ L.ones(5, 6), RuntimeError, ["4", "5"]),
    "matmul_1d": (lambda L: L.ones(3) @ L.ones(4), RuntimeError, ["3", "4"]),
    "mm": (lambda L: L.mm(L.ones(2, 3), L.ones(2, 3)), RuntimeError, ["2x3"]),
    "add_broadcast": (lambda L: L.ones(2, 3) + L.ones(4), RuntimeError, ["(3)", "(4)", "dimension 1"]),
    "mul_broadcast": (lambda L: L.ones(2, 3) * L.ones(2, 2), RuntimeError, ["(3)", "(2)"]),
    "index_oob": (lambda L: L.ones(2, 3)[2], IndexError, ["index 2", "dimension 0", "size 2"]),
    "index_oob_dim1": (lambda L: L.ones(2, 3)[0, 3], IndexError, ["index 3", "dimension 1", "size 3"]),
    "index_oob_neg": (lambda L: L.ones(2, 3)[-3], IndexError, ["-3", "size 2"]),
    "index_list_oob": (lambda L: L.ones(2, 3)[[0, 7]], IndexError, ["7", "size 2"]),
    "index_float": (lambda L: L.ones(2, 3)[1.0], IndexError, ["integers", "slices"]),
    "index_float_tensor": (lambda L: L.ones(2, 3)[L.tensor([0.5])], IndexError, ["long"]),
    "too_many_indices": (lambda L: L.ones(2, 3)[0, 0, 0], IndexError, ["too many indices", "2"]),
    "backward_nonscalar": (
        lambda L: (_leaf(L) * 2).backward(),
        RuntimeError,
        ["grad can be implicitly created only for scalar outputs", "[3]"],
    ),
    "backward_no_grad": (lambda L: L.ones(2).sum().backward(), RuntimeError, ["does not require grad"]),
    "second_backward": (_freed, RuntimeError, ["second time", "retain_graph=True"]),
    "version_counter": (_version, RuntimeError, ["modified by an inplace operation", "version"]),
    "version_counter_mul": (_version_mul, RuntimeError, ["modified by an inplace operation", "[3]"]),
    "leaf_inplace": (_leaf_inplace, RuntimeError, ["leaf Variable that requires grad", "in-place"]),
    "leaf_setitem": (_leaf_setitem, RuntimeError, ["leaf Variable that requires grad"]),
    "view_incompatible": (
        lambda L: L.ones(2, 3).t().view(6),
        RuntimeError,
        ["view size is not compatible", "reshape"],
    ),
    "view_wrong_numel": (lambda L: L.ones(3).view(2, 2), RuntimeError, ["[2, 2]", "size 3"]),
    "cat_mismatch": (
        lambda L: L.cat([L.ones(2, 3), L.ones(2, 4)]),
        RuntimeError,
        ["Sizes of tensors must match except in dimension 0", "3", "4", "tensor number 1"],
    ),
    "cat_ndim": (lambda L: L.cat([L.ones(2, 3), L.ones(3)]), RuntimeError, ["same number of dimensions"]),
    "stack_mismatch": (lambda L: L.stack([L.ones(2), L.ones(3)]), RuntimeError, ["[2]", "[3]", "entry 1"]),
    "reshape_numel": (lambda L: L.ones(2, 3).reshape(4), RuntimeError, ["[4]", "size 6"]),
    "reshape_infer": (lambda L: L.ones(2, 3).reshape(4, -1), RuntimeError, ["[4, -1]", "size 6"]),
    "expand_incompatible": (
        lambda L: L.ones(2, 3).expand(3, 3),
        RuntimeError,
        ["expanded size", "(3)", "(2)", "[3, 3]", "[2, 3]"],
    ),
    "expand_fewer_dims": (lambda L: L.ones(2, 3).expand(3), RuntimeError, ["expand", "2"]),
    "dim_out_of_range": (lambda L: L.ones(2, 3).sum(2), IndexError, ["Dimension out of range", "[-2, 1]", "2"]),
    "squeeze_dim": (lambda L: L.ones(2, 3).squeeze(3), IndexError, ["Dimension out of range"]),
    "permute_len": (lambda L: L.ones(2, 3).permute(0), RuntimeError, ["2", "1"]),
    "narrow_oob": (lambda L: L.ones(2, 3).narrow(1, 2, 2), RuntimeError, ["start (2) + length (2)", "(3)"]),
    "gather_float_index": (lambda L: L.ones(2, 3).gather(1, L.ones(2, 3)), RuntimeError, ["gather", "int"]),
    "index_select_2d": (
        lambda L: L.ones(2, 3).index_select(0, L.tensor([[0]])),
        IndexError,
        ["index_select", "vector"],
    ),
    "masked_fill_float_mask": (
        lambda L: L.ones(2, 3).masked_fill(L.ones(2, 3), 1.0),
        RuntimeError,
        ["boolean", "float"],
    ),
    "requires_grad_int": (lambda L: L.ones(2, dtype=L.int64).requires_grad_(), RuntimeError, ["floating point"]),
    "item_many": (lambda L: L.ones(2, 3).item(), RuntimeError, ["6 elements"]),
    "bool_ambiguous": (lambda L: bool(L.ones(2)), RuntimeError, ["ambiguous"]),
    "len_0d": (lambda L: len(L.tensor(1.0)), TypeError, ["0-d"]),
    "numpy_requires_grad": (lambda L: _leaf(L).numpy(), RuntimeError, ["detach().numpy()"]),
    "topk_k": (lambda L: L.ones(2, 3).topk(4), RuntimeError, ["k"]),
    "repeat_dims": (lambda L: L.ones(2, 3).repeat(2), RuntimeError, ["repeat dims"]),
    "flatten_order": (lambda L: L.ones(2, 3).flatten(1, 0), RuntimeError, ["start_dim"]),
    "chunk_zero": (lambda L: L.ones(2, 3).chunk(0), RuntimeError, ["chunks", "0"]),
    "setitem_shape": (lambda L: L.zeros(2, 3).__setitem__(0, L.ones(4)), RuntimeError, ["[4]", "3"]),
    "grad_assign_shape": (lambda L: setattr(_leaf(L), "grad", L.ones(4)), RuntimeError, ["size", "[4]", "[3]"]),
    "int_inplace_float": (lambda L: L.ones(3, dtype=L.int64).mul_(1.5), RuntimeError, ["Float", "Long"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_type_and_message(name):
    fn, exc, fragments = CASES[name]
    with pytest.raises(exc):
        fn(torch)
    with pytest.raises(exc) as info:
        fn(ember)
    msg = str(info.value)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"ember's message {msg!r} lacks {missing}"


def test_grad_output_shape_mismatch():
    for L in (ember, torch):
        x = _leaf(L)
        with pytest.raises(RuntimeError, match="Mismatch in shape"):
            L.autograd.grad(x * 2, x, L.ones(4))


def test_function_wrong_number_of_grads():
    class Bad(ember.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g  # two inputs: two gradients expected

    a, b = ember.ones(2, requires_grad=True), ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        Bad.apply(a, b).sum().backward()
