"""The autograd API against PyTorch: backward/grad options, grad modes, hooks, Function, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, rand


def both(fn):
    """Run ``fn(L)`` for ember and torch and compare the (nested) results."""
    e, t = fn(ember), fn(torch)
    _compare(e, t)
    return e


def _compare(e, t):
    if isinstance(t, (list, tuple)):
        assert isinstance(e, (list, tuple)) and len(e) == len(t), (e, t)
        for a, b in zip(e, t):
            _compare(a, b)
    elif isinstance(t, torch.Tensor):
        assert isinstance(e, ember.Tensor), f"expected a tensor, got {e!r}"
        assert_close(e, t)
    else:
        assert e == t, (e, t)


def leaf(L, a, requires_grad=True):
    return L.tensor(a, requires_grad=requires_grad)


X = rand(3, 4)
Y = rand(4)


# --------------------------------------------------------------------------- backward options
def test_backward_with_gradient_argument():
    def fn(L):
        x = leaf(L, X)
        y = x.sin() * 2
        y.backward(L.tensor(rand(3, 4, low=-1)))
        return x.grad

    both(fn)


def test_backward_gradient_dtype_and_shape_checked():
    x = ember.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        (x * 2).backward(ember.ones(4, 3))


def test_retain_graph_allows_second_backward_and_accumulates():
    def fn(L):
        x = leaf(L, X)
        y = (x.exp() * x).sum()
        y.backward(retain_graph=True)
        first = x.grad.clone()
        y.backward()
        return first, x.grad

    e, _ = both(fn), None
    np.testing.assert_allclose(e[1].numpy(), 2 * e[0].numpy(), rtol=1e-6)


@pytest.mark.parametrize("op", ["exp", "mul", "matmul", "sigmoid", "pow"])
def test_second_backward_without_retain_raises(op):
    for L in (ember, torch):
        x = leaf(L, X)
        ops = {
            "exp": lambda t: t.exp().sum(),
            "mul": lambda t: (t * t).sum(),
            "matmul": lambda t: (t @ t.t()).sum(),
            "sigmoid": lambda t: t.sigmoid().sum(),
            "pow": lambda t: (t**3).sum(),
        }
        y = ops[op](x)
        y.backward()
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            y.backward()


def test_second_backward_through_value_free_ops_is_allowed():
    """Ops that save no values (add, sum, views) can be re-run, as in torch."""

    def fn(L):
        x = leaf(L, X)
        y = (x + 1).t().reshape(-1).sum()
        y.backward()
        y.backward()
        return x.grad

    both(fn)


def test_create_graph_higher_order():
    def fn(L):
        x = leaf(L, Y)
        y = (x**3).sin().sum()
        (g,) = L.autograd.grad(y, x, create_graph=True)
        (gg,) = L.autograd.grad(g.sum(), x, create_graph=True)
        (ggg,) = L.autograd.grad(gg.sum(), x)
        return g, gg, ggg

    both(fn)


@pytest.mark.filterwarnings("ignore:Using backward")
def test_backward_create_graph_then_backward_of_grad():
    def fn(L):
        x = leaf(L, Y)
        (x.tanh() * x).sum().backward(create_graph=True)
        g = x.grad
        assert g.requires_grad
        x.grad = None
        (g * g).sum().backward()
        return g.detach(), x.grad

    both(fn)


def test_grad_multiple_inputs_outputs_and_grad_outputs():
    def fn(L):
        a, b = leaf(L, X), leaf(L, Y)
        u = a * b
        v = (a.exp() @ b).sin()
        go = [L.ones(3, 4) * 0.5, L.tensor(rand(3, low=-1))]
        return L.autograd.grad([u, v], [a, b], grad_outputs=go)

    both(fn)


def test_grad_allow_unused():
    def fn(L):
        a, b = leaf(L, X), leaf(L, Y)
        with pytest.raises(RuntimeError, match="not have been used in the graph"):
            L.autograd.grad((a * 2).sum(), [a, b])
        ga, gb = L.autograd.grad((a * 2).sum(), [a, b], allow_unused=True)
        assert gb is None
        return ga

    both(fn)


def test_grad_nonleaf_inputs_and_does_not_touch_leaf_grad():
    def fn(L):
        x = leaf(L, X)
        h = x * 3
        z = h.exp()
        gh, gz = L.autograd.grad((z * h).sum(), [h, z])
        assert x.grad is None
        return gh, gz

    both(fn)


def test_grad_requires_grad_input_check():
    for L in (ember, torch):
        x = L.ones(3)
        y = L.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match="does not require grad"):
            L.autograd.grad((y * 2).sum(), x)


def test_accumulation_across_backwards():
    def fn(L):
        x = leaf(L, X)
        (x * x).sum().backward()
        (x.sin()).sum().backward()
        return x.grad

    both(fn)


def test_backward_inputs_argument():
    def fn(L):
        a, b = leaf(L, X), leaf(L, Y)
        (a * b).sum().backward(inputs=[b])
        return a.grad is None, b.grad

    both(fn)


# --------------------------------------------------------------------------- grad modes
def test_grad_mode_context_managers_and_nesting():
    for L in (ember, torch):
        x = L.ones(2, requires_grad=True)
        with L.no_grad():
            assert not L.is_grad_enabled()
            assert not (x * 2).requires_grad
            with L.enable_grad():
                assert (x * 2).requires_grad
            with L.set_grad_enabled(True):
                assert (x * 2).requires_grad
            assert not (x * 2).requires_grad
        assert L.is_grad_enabled()
        with L.set_grad_enabled(False):
            assert not (x * 2).requires_grad
        assert (x * 2).requires_grad
        L.set_grad_enabled(False)  # a plain call switches at once
        assert not L.is_grad_enabled()
        L.set_grad_enabled(True)
        assert L.is_grad_enabled()


def test_grad_mode_restored_after_exception():
    for L in (ember, torch):
        with pytest.raises(ValueError):
            with L.no_grad():
                raise ValueError
        assert L.is_grad_enabled()


def test_grad_mode_decorators():
    for L in (ember, torch):

        @L.no_grad()
        def f(x):
            return x * 2

        @L.enable_grad()
        def g(x):
            return x * 2

        @L.set_grad_enabled(False)
        def h(x):
            return x * 2

        x = L.ones(2, requires_grad=True)
        assert L.is_grad_enabled()  # the decorator alone changes nothing
        assert not f(x).requires_grad
        assert not h(x).requires_grad
        with L.no_grad():
            assert g(x).requires_grad
        assert f.__name__ == "f"
        assert L.is_grad_enabled()


def test_inference_mode():
    x = ember.ones(2, requires_grad=True)
    with ember.inference_mode():
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


# --------------------------------------------------------------------------- tensor-level API
def test_requires_grad_flags():
    for L in (ember, torch):
        x = L.ones(2)
        assert x.requires_grad_() is x and x.requires_grad and x.is_leaf
        y = x * 2
        assert not y.is_leaf and y.requires_grad
        with pytest.raises(RuntimeError, match="leaf variables"):
            y.requires_grad = False
        with pytest.raises(RuntimeError, match="floating point"):
            L.ones(2, dtype=L.int64).requires_grad_()
        d = y.detach()
        assert d.is_leaf and not d.requires_grad and d.grad_fn is None
        assert L.ones(2).is_leaf


def test_hooks_leaf_nonleaf_modify_and_remove():
    def fn(L):
        x = leaf(L, Y)
        seen = []
        h1 = x.register_hook(lambda g: g * 10)
        y = x * 2
        h2 = y.register_hook(lambda g: seen.append(g.clone()))
        y.register_hook(lambda g: g + 1)
        y.sum().backward()
        first = x.grad.clone()
        h1.remove()
        h2.remove()
        x.grad = None
        y2 = x * 2
        y2.sum().backward()
        return first, x.grad, seen[0]

    both(fn)


def test_hook_on_intermediate_used_twice():
    def fn(L):
        x = leaf(L, Y)
        h = x.exp()
        h.register_hook(lambda g: g * 2)
        (h * h + h).sum().backward()
        return x.grad

    both(fn)


def test_retain_grad():
    def fn(L):
        x = leaf(L, X)
        h = x.sin()
        h.retain_grad()
        assert h.retains_grad
        (h * h).sum().backward()
        return h.grad, x.grad

    both(fn)


def test_nonleaf_grad_is_none_without_retain():
    x = ember.ones(2, requires_grad=True)
    h = x * 2
    h.sum().backward()
    assert h.grad is None


def test_detach_shares_memory_and_cuts_graph():
    for L in (ember, torch):
        x = L.ones(3, requires_grad=True)
        y = x * 2
        d = y.detach()
        d[0] = 5.0
        assert y[0].item() == 5.0
        z = L.ones(3, requires_grad=True)
        d.add_(z)  # a detached tensor is not a view of y for autograd: y's history stays Mul
        assert type(y.grad_fn).__name__.startswith("Mul")
        assert d.grad_fn is not None
        p = L.ones(3, requires_grad=True)
        p.detach().zero_()  # allowed: the classic ``p.data.zero_()``
        p.data.add_(1)
        assert p.tolist() == [1.0, 1.0, 1.0]


GRAD_FN_NAMES = {
    "add": (lambda x: x + x, "AddBackward0"),
    "mul": (lambda x: x * 2, "MulBackward0"),
    "sum": (lambda x: x.sum(), "SumBackward0"),
    "exp": (lambda x: x.exp(), "ExpBackward0"),
    "matmul": (lambda x: x @ x.t(), "MmBackward0"),
    "view": (lambda x: x.view(-1), "ViewBackward0"),
    "permute": (lambda x: x.permute(1, 0), "PermuteBackward0"),
}


@pytest.mark.parametrize("name", ["add", "mul", "sum", "exp"])
def test_grad_fn_names_and_next_functions(name):
    fn, expected = GRAD_FN_NAMES[name]
    x = ember.tensor(X, requires_grad=True)
    y = fn(x)
    assert y.grad_fn.name() == expected
    nxt = y.grad_fn.next_functions
    assert nxt and all(n is None or n[0] is None or hasattr(n[0], "name") for n in nxt)
    leaves = [n[0] for n in nxt if n[0] is not None and n[0].name() == "AccumulateGrad"]
    assert leaves and leaves[0].variable is x
    z = y.exp()
    assert z.grad_fn.next_functions[0][0] is y.grad_fn


# --------------------------------------------------------------------------- custom Function
def _functions(L):
    class Cube(L.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return x**3 * k

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x**2 * ctx.k * g, None

    class SinCos(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin(), x.cos()

        @staticmethod
        def backward(ctx, gs, gc):
            (x,) = ctx.saved_tensors
            return gs * x.cos() - gc * x.sin()

    class ArgmaxAndMax(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            idx = x.argmax(0, keepdim=True)
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(idx)
            ctx.shape = x.shape
            return x.gather(0, idx), idx

        @staticmethod
        def backward(ctx, g, _gidx):
            (idx,) = ctx.saved_tensors
            out = L.zeros(ctx.shape, dtype=g.dtype)
            return out.scatter(0, idx, g)

    class Needs(L.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.record = ctx.needs_input_grad
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g * 2, g * 3

    class Once(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp()

        @staticmethod
        @L.autograd.function.once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.exp()

    return Cube, SinCos, ArgmaxAndMax, Needs, Once


def test_custom_function_single_output():
    def fn(L):
        Cube = _functions(L)[0]
        x = leaf(L, X)
        y = Cube.apply(x, 2.0)
        assert y.requires_grad and not y.is_leaf
        (y * y).sum().backward()
        return y, x.grad

    both(fn)


def test_custom_function_multiple_outputs():
    def fn(L):
        SinCos = _functions(L)[1]
        x = leaf(L, X)
        s, c = SinCos.apply(x)
        (s * 2 + c * c).sum().backward()
        g1 = x.grad.clone()
        x.grad = None
        s2, _ = SinCos.apply(x)  # only one output used: the other's gradient is materialized as zeros
        s2.sum().backward()
        return s, c, g1, x.grad

    both(fn)


def test_custom_function_non_differentiable_output():
    def fn(L):
        F = _functions(L)[2]
        x = leaf(L, X)
        m, idx = F.apply(x)
        assert not idx.requires_grad and m.requires_grad
        (m * 3).sum().backward()
        return m, idx, x.grad

    both(fn)


def test_custom_function_needs_input_grad():
    for L in (ember, torch):
        Needs = _functions(L)[3]
        a = L.ones(2, requires_grad=True)
        b = L.ones(2)
        y = Needs.apply(a, b)
        assert y.grad_fn is not None
        y.sum().backward()
        assert a.grad.tolist() == [2.0, 2.0] and b.grad is None
        assert tuple(y.grad_fn.record if L is ember else (True, False)) == (True, False)
        with L.no_grad():
            assert not Needs.apply(a, b).requires_grad


def test_custom_function_ctx_needs_input_grad_seen_in_forward():
    seen = {}
    for L in (ember, torch):
        lib_name = L.__name__

        class F(L.autograd.Function):
            @staticmethod
            def forward(ctx, a, b, name=lib_name):
                seen[name] = tuple(ctx.needs_input_grad)
                return a + b

            @staticmethod
            def backward(ctx, g):
                return g, g

        F.apply(L.ones(2, requires_grad=True), L.ones(2))
    assert seen["ember"] == seen["torch"] == (True, False)


def test_custom_function_once_differentiable():
    for L in (ember, torch):
        Once = _functions(L)[4]
        x = L.tensor(Y, requires_grad=True)
        y = Once.apply(x).sum()
        (g,) = L.autograd.grad(y, x, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), np.exp(Y), rtol=1e-6)
        with pytest.raises(RuntimeError):
            g.sum().backward()


def test_custom_function_saved_tensor_modified_raises():
    for L in (ember, torch):
        Cube = _functions(L)[0]
        x = L.tensor(Y, requires_grad=True)
        h = x * 1
        y = Cube.apply(h, 1.0)
        h.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


# --------------------------------------------------------------------------- gradcheck
def _double(a):
    return ember.tensor(a.astype(np.float64), requires_grad=True)


def test_gradcheck_passes_on_correct_function():
    Cube, SinCos = _functions(ember)[:2]
    x = _double(rand(3))
    assert ember.autograd.gradcheck(lambda t: Cube.apply(t, 1.5), (x,))
    assert ember.autograd.gradcheck(lambda t: SinCos.apply(t), (x,))
    assert ember.autograd.gradgradcheck(lambda t: Cube.apply(t, 1.5), (x,))
    assert ember.autograd.gradcheck(lambda a, b: (a @ b).tanh(), (_double(rand(2, 3)), _double(rand(3, 2))))
    assert ember.autograd.gradgradcheck(lambda a: (a.sin() * a).sum(), (_double(rand(4)),))


def test_gradcheck_fails_on_wrong_function():
    class WrongCube(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x**2 * g  # should be 3 x^2

    class WrongSecond(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x.detach() ** 2 * g  # right value, but no second derivative through x

    x = _double(rand(3))
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        ember.autograd.gradcheck(WrongCube.apply, (x,))
    assert ember.autograd.gradcheck(WrongCube.apply, (x,), raise_exception=False) is False
    assert ember.autograd.gradcheck(WrongSecond.apply, (x,))
    with pytest.raises(RuntimeError):
        ember.autograd.gradgradcheck(WrongSecond.apply, (x,))


# --------------------------------------------------------------------------- scale and determinism
def test_long_chain_no_recursion_error():
    x = ember.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001**10_000, rtol=1e-3)
    z = ember.tensor(1.0, requires_grad=True)
    w = z
    for _ in range(2000):
        w = w.reshape(1).reshape(()) + 0.0  # views in the chain as well
    w.backward()
    assert z.grad.item() == 1.0


def test_deterministic_gradients():
    def run():
        x = ember.tensor(rand(8, 8), requires_grad=True)
        w = ember.tensor(rand(8, 8, low=-1), requires_grad=True)
        h = (x @ w).tanh()
        loss = (h[[0, 0, 3, 5]] * h.sum(0)).sum() + (h.exp() @ w).mean()
        loss.backward()
        return x.grad.numpy().copy(), w.grad.numpy().copy()

    a, b = run(), run()
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_once_differentiable_raises_when_differentiated_twice():
    for L in (ember, torch):
        Once = _functions(L)[4]
        x = L.tensor(Y, requires_grad=True)
        y = Once.apply(x)
        go = L.ones(4, requires_grad=True)
        (g,) = L.autograd.grad(y, x, go, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), np.exp(Y), rtol=1e-6)
        assert g.requires_grad
        with pytest.raises(RuntimeError, match="once_differentiable"):
            g.sum().backward()


def test_gradcheck_noncontiguous_input():
    x = _double(rand(3, 4)).t()  # a non-leaf view: perturbation must reach the data it reads
    x = x.detach().requires_grad_()
    assert not x.is_contiguous()
    assert ember.autograd.gradcheck(lambda t: (t * t.sin()).sum(0), (x,))


def test_retain_grad_accumulates_across_backwards():
    def fn(L):
        x = leaf(L, Y)
        h = x * 2
        h.retain_grad()
        y = (h * h).sum()
        y.backward(retain_graph=True)
        y.backward()
        return h.grad, x.grad

    both(fn)


def test_function_without_saved_tensors_can_backward_twice():
    def fn(L):
        class Double(L.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2

        x = leaf(L, Y)
        y = Double.apply(x).sum()
        y.backward()
        y.backward()
        return x.grad

    both(fn)


def test_function_gradient_shape_validated():
    for L in (ember, torch):

        class Bad(L.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.sum()

            @staticmethod
            def backward(ctx, g):
                return g.expand(3)

        class Broadcast(L.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 1

            @staticmethod
            def backward(ctx, g):
                return g.expand(2, 4) * 1  # summed back to the input's (4,), as torch does

        x = L.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="invalid gradient at index 0"):
            Bad.apply(x).backward()
        z = L.ones(4, requires_grad=True)
        Broadcast.apply(z).sum().backward()
        assert z.grad.tolist() == [2.0] * 4
