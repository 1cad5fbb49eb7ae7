"""Micro-benchmarks of the core: per-op dispatch cost, large elementwise ops, and matmul.

Each workload is written once in the PyTorch API (its argument is ``ember`` or ``torch``);
NumPy baselines are attached with ``@case.impl("numpy")``. Targets (ratio ember/baseline):
- dispatch (16 float32 elements, with autograd): ember <= 2x torch;
- small ops (every common op on 16 elements or 4x4, with and without autograd): ember <= 1x torch
  (issue 8: the dispatch overhead at or below PyTorch's);
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


# --------------------------------------------------------------------------- small ops (issue 8)
# Every common op on 16 elements (4x4 for matrix ops), with and without autograd: the dispatch
# overhead of one apply() should stay at or below PyTorch's (target 1.0x).
def _small_inputs(torch, requires_grad):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(SMALL, generator=gen).requires_grad_(requires_grad)
    b = torch.randn(SMALL, generator=gen).requires_grad_(requires_grad)
    m = torch.randn(4, 4, generator=gen).requires_grad_(requires_grad)
    m2 = torch.randn(4, 4, generator=gen).requires_grad_(requires_grad)
    return a, b, m, m2


SMALL_OPS = {  # name -> op on (a, b, m, m2)
    "a.exp()": lambda a, b, m, m2: a.exp(),
    "-a": lambda a, b, m, m2: -a,
    "a.relu()": lambda a, b, m, m2: a.relu(),
    "a.sigmoid()": lambda a, b, m, m2: a.sigmoid(),
    "a.tanh()": lambda a, b, m, m2: a.tanh(),
    "a + b": lambda a, b, m, m2: a + b,
    "a - b": lambda a, b, m, m2: a - b,
    "a * b": lambda a, b, m, m2: a * b,
    "a / b": lambda a, b, m, m2: a / b,
    "a + 2.0": lambda a, b, m, m2: a + 2.0,
    "a * 2.0": lambda a, b, m, m2: a * 2.0,
    "1.0 - a": lambda a, b, m, m2: 1.0 - a,
    "a.sum()": lambda a, b, m, m2: a.sum(),
    "a.mean()": lambda a, b, m, m2: a.mean(),
    "m.sum(1)": lambda a, b, m, m2: m.sum(1),
    "m.max(dim=1)": lambda a, b, m, m2: m.max(dim=1),
    "m @ m2 (4x4)": lambda a, b, m, m2: m @ m2,
    "a.reshape(4, 4)": lambda a, b, m, m2: a.reshape(4, 4),
    "a.view(4, 4)": lambda a, b, m, m2: a.view(4, 4),
    "m.transpose(0, 1)": lambda a, b, m, m2: m.transpose(0, 1),
    "m.t()": lambda a, b, m, m2: m.t(),
    "m[1]": lambda a, b, m, m2: m[1],
    "a[2:10]": lambda a, b, m, m2: a[2:10],
    "a > b": lambda a, b, m, m2: a > b,
    "a < 0.0": lambda a, b, m, m2: a < 0.0,
}


def _small_case(name, op, requires_grad):
    @workload("small ops", f"{name} ({'grad' if requires_grad else 'no grad'})", target=1.0)
    def case(torch):
        a, b, m, m2 = _small_inputs(torch, requires_grad)
        return lambda: op(a, b, m, m2)

    return case


SMALL_CASES = [_small_case(n, op, rg) for rg in (False, True) for n, op in SMALL_OPS.items()]


@workload("small ops", "(a * b).sum().backward() (16)", target=1.0)
def small_backward(torch):
    a, b, _, _ = _small_inputs(torch, True)

    def step():
        a.grad = None
        b.grad = None
        (a * b).sum().backward()

    return step


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
