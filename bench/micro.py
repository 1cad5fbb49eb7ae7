"""Micro-benchmarks of the core: per-op dispatch cost, large elementwise ops, and matmul.

Each workload is written once in the PyTorch API (its argument is ``ember`` or ``torch``);
NumPy baselines are attached with ``@case.impl("numpy")``. Targets (ratio ember/baseline):
- dispatch (16 float32 elements, with autograd): ember <= 2x torch;
- 16M-element float32 elementwise: ember <= 1.2x NumPy writing into a preallocated output;
- 1024x1024 float32 matmul (and a batched one): ember <= 1.05x ``np.matmul``.
"""

from __future__ import annotations

from bench.harness import workload

SMALL = 16
LARGE = 1 << 24  # 16M elements: 64 MiB per float32 array
MM = 1024
BATCH = (16, 256, 256)


# --------------------------------------------------------------------------- dispatch
def _pair(torch, n, requires_grad):
    a = torch.randn(n, requires_grad=requires_grad)
    b = torch.randn(n, requires_grad=requires_grad)
    return a, b


@workload("dispatch", "a + b (16, grad)", target=2.0)
def dispatch_add(torch):
    a, b = _pair(torch, SMALL, True)
    return lambda: a + b


@workload("dispatch", "a * b (16, grad)", target=2.0)
def dispatch_mul(torch):
    a, b = _pair(torch, SMALL, True)
    return lambda: a * b


@workload("dispatch", "a.exp() (16, grad)", target=2.0)
def dispatch_exp(torch):
    a, _ = _pair(torch, SMALL, True)
    return lambda: a.exp()


@workload("dispatch", "a.sum() (16, grad)", target=2.0)
def dispatch_sum(torch):
    a, _ = _pair(torch, SMALL, True)
    return lambda: a.sum()


@workload("dispatch", "(a + b).sum().backward() (16)", target=2.0)
def dispatch_backward(torch):
    a, b = _pair(torch, SMALL, True)

    def step():
        a.grad = None
        b.grad = None
        (a + b).sum().backward()

    return step


@workload("dispatch", "a + b (16, no grad)", note="report only, the cost without autograd")
def dispatch_add_nograd(torch):
    a, b = _pair(torch, SMALL, False)
    return lambda: a + b


# --------------------------------------------------------------------------- large elementwise
def _np_pair(np, n):
    rng = np.random.default_rng(0)
    return rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)


def _large(name, torch_op, np_ufunc):
    @workload("elementwise", f"{name} (16M)", baseline="numpy", target=1.2)
    def case(torch):
        a, b = _pair(torch, LARGE, False)
        return lambda: torch_op(a, b)

    @case.impl("numpy")  # the target: NumPy writing into a preallocated output
    def _(np):
        a, b = _np_pair(np, LARGE)
        out = np.empty_like(a)
        return lambda: np_ufunc(np, a, b, out)

    @case.impl("numpy (fresh out)", module="numpy")  # what an eager op must do: a new array per call
    def _(np):
        a, b = _np_pair(np, LARGE)
        return lambda: np_ufunc(np, a, b, None)

    return case


large_add = _large("a + b", lambda a, b: a + b, lambda np, a, b, out: np.add(a, b, out=out))
large_mul = _large("a * b", lambda a, b: a * b, lambda np, a, b, out: np.multiply(a, b, out=out))
large_exp = _large("a.exp()", lambda a, b: a.exp(), lambda np, a, b, out: np.exp(a, out=out))


# --------------------------------------------------------------------------- matmul
def _matmul(name, shape_a, shape_b):
    @workload("matmul", name, baseline="numpy", target=1.05)
    def case(torch):
        a = torch.randn(*shape_a)
        b = torch.randn(*shape_b)
        return lambda: a @ b

    @case.impl("numpy")
    def _(np):
        rng = np.random.default_rng(0)
        a = rng.standard_normal(shape_a, dtype=np.float32)
        b = rng.standard_normal(shape_b, dtype=np.float32)
        return lambda: np.matmul(a, b)

    return case


matmul_square = _matmul(f"{MM}x{MM} @ {MM}x{MM}", (MM, MM), (MM, MM))
matmul_batched = _matmul("16x256x256 @ 16x256x256 (batched)", BATCH, BATCH)
