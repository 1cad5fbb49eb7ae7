"""Every optimizer, every implementation (for-loop, foreach, fused) against torch.optim, step by step.

Same initial weights and the same loss (each framework takes its own gradients), 12 steps, in
float64 (1e-6 relative) and float32 (1e-5 relative). Then: state_dict format and resume for the
new optimizers, the multi-tensor and fused ops themselves, and the shared base class.
"""

from __future__ import annotations

import copy
import pathlib

import numpy as np
import pytest
import torch

import ember
import ember.optim

SHAPES = [(3, 4), (4,), (2, 3, 2)]
TOL = {"float64": (1e-6, 1e-9), "float32": (1e-5, 1e-6)}
STEPS = 12


class Problem:
    """sum(a p^2 + b sin(p)) over three parameters, in one framework and dtype."""

    def __init__(self, lib, dtype: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.lib = lib
        dt = getattr(lib, dtype)
        self.params = [lib.tensor(rng.uniform(-1.5, 1.5, s), dtype=dt, requires_grad=True) for s in SHAPES]
        self.a = [lib.tensor(rng.uniform(0.5, 2.0, s), dtype=dt) for s in SHAPES]
        self.b = [lib.tensor(rng.uniform(-1.0, 1.0, s), dtype=dt) for s in SHAPES]

    def closure(self, opt):
        def fn():
            opt.zero_grad()
            total = 0
            for p, a, b in zip(self.params, self.a, self.b):
                total = total + (a * p * p).sum() + (b * self.lib.sin(p)).sum()
            total.backward()
            return total

        return fn

    def values(self):
        return [p.detach().numpy().copy() for p in self.params]


def _opt(lib, name, params, kwargs):
    return getattr(lib.optim, name)(params, **kwargs)


def _compare(name, kwargs, impl_kwargs, dtype, steps=STEPS):
    pe, pt = Problem(ember, dtype), Problem(torch, dtype)
    oe = _opt(ember, name, pe.params, {**kwargs, **impl_kwargs})
    ot = _opt(torch, name, pt.params, kwargs)  # torch's default on CPU: the for-loop
    rtol, atol = TOL[dtype]
    for step in range(steps):
        le = oe.step(pe.closure(oe))
        lt = ot.step(pt.closure(ot))
        np.testing.assert_allclose(le.item(), lt.item(), rtol=rtol * 10, err_msg=f"loss, step {step + 1}")
        for i, (e, t) in enumerate(zip(pe.values(), pt.values())):
            np.testing.assert_allclose(e, t, rtol=rtol, atol=atol, err_msg=f"{name} {impl_kwargs} step {step + 1} p{i}")
            assert e.dtype == t.dtype
    return oe, ot


CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("Adam", {"lr": 0.05}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("Adam", {"lr": 0.05, "betas": (0.3, 0.9), "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True}),
    ("AdamW", {"lr": 0.05, "maximize": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    ("RMSprop", {"lr": 0.01, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1, "maximize": True}),
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1}),
    ("Adadelta", {"lr": 0.5, "maximize": True}),
    ("Adamax", {"lr": 0.05}),
    ("Adamax", {"lr": 0.05, "betas": (0.8, 0.95), "weight_decay": 0.1, "maximize": True}),
    ("NAdam", {"lr": 0.05}),
    ("NAdam", {"lr": 0.05, "weight_decay": 0.1, "momentum_decay": 0.01}),
    ("NAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    ("RAdam", {"lr": 0.05}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1, "betas": (0.9, 0.9)}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    ("ASGD", {"lr": 0.05}),
    ("ASGD", {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 4, "weight_decay": 0.1}),
    ("ASGD", {"lr": 0.05, "t0": 2, "maximize": True}),
]
FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
IMPLS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}, "default": {}}


def _impl_cases():
    for i, (name, kwargs) in enumerate(CASES):
        for impl, extra in IMPLS.items():
            if impl == "fused" and name not in FUSED:
                continue
            yield pytest.param(name, kwargs, extra, id=f"{name}-{i}-{impl}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "kwargs", "impl"), list(_impl_cases()))
def test_steps_match_torch(name, kwargs, impl, dtype):
    _compare(name, kwargs, impl, dtype)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_without_c_compiler_matches(monkeypatch, fused):
    """EMBER_CKERNELS=0: the fused ops take their NumPy path, with the same values."""
    from ember.backends.ckernels import optim as kernels

    monkeypatch.setattr(kernels, "_state", {**kernels._state, "lib": None, "tried": True})
    assert not kernels.available()
    for name, kwargs in [("Adam", {"lr": 0.05, "amsgrad": True}), ("SGD", {"lr": 0.05, "momentum": 0.9})]:
        _compare(name, kwargs, {"fused": True} if fused else {}, "float32")
    _compare("Adagrad", {"lr": 0.1, "lr_decay": 0.1}, {"fused": True}, "float64")


def test_default_implementation_choice():
    p = [ember.zeros(3, requires_grad=True)]
    from ember.backends.ckernels import optim as kernels

    fused = "fused" if kernels.available() else "foreach"
    assert ember.optim.Adam(p)._implementation(ember.optim.Adam(p).param_groups[0], p) == fused
    cases = [
        (ember.optim.Adam(p, foreach=False), "forloop"),
        (ember.optim.Adam(p, foreach=True), "foreach"),
        (ember.optim.Adam(p, fused=True), "fused"),
        (ember.optim.Adam(p, fused=False), "foreach"),
        (ember.optim.RMSprop(p), "foreach"),
        (ember.optim.SGD(p), fused),
    ]
    for opt, impl in cases:
        assert opt._implementation(opt.param_groups[0], p) == impl, opt
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        ember.optim.Adam(p, fused=True, foreach=True)
    opt = ember.optim.Adam([ember.zeros(2, dtype=ember.int64)], fused=True)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point"):
        opt._implementation(opt.param_groups[0], opt.param_groups[0]["params"])


# --------------------------------------------------------------------------- state dicts
NEW = [
    ("Adadelta", {"weight_decay": 0.1}),
    ("Adamax", {"lr": 0.05}),
    ("NAdam", {"lr": 0.05}),
    ("RAdam", {"lr": 0.05}),
    ("ASGD", {"lr": 0.05, "t0": 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), NEW, ids=[n for n, _ in NEW])
def test_state_dict_format_and_resume(name, kwargs):
    oe, ot = _compare(name, kwargs, {}, "float32", steps=6)
    se, st = oe.state_dict(), ot.state_dict()
    assert se["param_groups"][0].keys() == st["param_groups"][0].keys()
    assert {k: v for k, v in se["param_groups"][0].items()} == st["param_groups"][0]
    assert list(se["state"]) == list(st["state"]) == [0, 1, 2]
    for idx, s_t in st["state"].items():
        assert list(se["state"][idx]) == list(s_t)
        for key, vt in s_t.items():
            ve = se["state"][idx][key]
            assert ve.shape == tuple(vt.shape) and str(ve.dtype)[6:] == str(vt.dtype)[6:], key
            np.testing.assert_allclose(ve.numpy(), vt.numpy(), rtol=1e-5, atol=1e-7, err_msg=key)

    # Resume: 3 steps, save, load into a fresh optimizer, 3 more == 6 uninterrupted.
    prob = Problem(ember, "float32")
    first = _opt(ember, name, prob.params, kwargs)
    for _ in range(3):
        first.step(prob.closure(first))
    saved = copy.deepcopy(first.state_dict())
    second = _opt(ember, name, prob.params, kwargs)
    second.load_state_dict(saved)
    for _ in range(3):
        second.step(prob.closure(second))
    ref = Problem(ember, "float32")
    third = _opt(ember, name, ref.params, kwargs)
    for _ in range(6):
        third.step(ref.closure(third))
    for a, b in zip(prob.values(), ref.values()):
        np.testing.assert_array_equal(a, b)


def test_torch_state_dict_loads_into_ember():
    """A state_dict written by torch (tensors converted) resumes in Ember on the same trajectory."""
    pe, pt = Problem(ember, "float64"), Problem(torch, "float64")
    ot = torch.optim.NAdam(pt.params, lr=0.05)
    for _ in range(3):
        ot.step(pt.closure(ot))
    for p_e, p_t in zip(pe.params, pt.params):
        with ember.no_grad():
            p_e.copy_(ember.tensor(p_t.detach().numpy()))
    sd = ot.state_dict()
    sd = {
        "state": {k: {n: ember.tensor(v.numpy()) for n, v in s.items()} for k, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    oe = ember.optim.NAdam(pe.params, lr=0.05)
    oe.load_state_dict(sd)
    for _ in range(4):
        oe.step(pe.closure(oe))
        ot.step(pt.closure(ot))
    for a, b in zip(pe.values(), pt.values()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- LBFGS
def _lbfgs_problem(lib):
    rng = np.random.default_rng(3)
    x = lib.tensor(rng.uniform(-3, 3, (64, 1)))
    y = lib.sin(x)
    w1 = lib.tensor(rng.normal(0, 0.5, (1, 16)), requires_grad=True)
    w2 = lib.tensor(rng.normal(0, 0.5, (16, 1)), requires_grad=True)
    return x, y, [w1, w2]


def _lbfgs_run(lib, kwargs):
    x, y, params = _lbfgs_problem(lib)
    opt = lib.optim.LBFGS(params, **kwargs)

    def closure():
        opt.zero_grad()
        loss = ((lib.tanh(x @ params[0]) @ params[1] - y) ** 2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(5)]
    state = opt.state_dict()["state"][0]
    return losses, [p.detach().numpy() for p in params], state["func_evals"], state["n_iter"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1, "max_iter": 5},
        {"lr": 0.5, "max_iter": 7, "history_size": 3},
        {"max_iter": 6, "line_search_fn": "strong_wolfe"},
        {"max_iter": 4, "history_size": 2, "line_search_fn": "strong_wolfe", "tolerance_change": 1e-5},
    ],
)
def test_lbfgs_matches_torch(kwargs):
    runs = {lib.__name__: _lbfgs_run(lib, kwargs) for lib in (ember, torch)}
    (le, pe, fe, ne), (lt, pt, ft, nt) = runs["ember"], runs["torch"]
    np.testing.assert_allclose(le, lt, rtol=1e-6)
    for a, b in zip(pe, pt):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert (fe, ne) == (ft, nt)


def test_lbfgs_errors_like_torch():
    p = [ember.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="LBFGS doesn't support per-parameter options"):
        ember.optim.LBFGS([{"params": p}, {"params": [ember.zeros(1, requires_grad=True)]}])
    opt = ember.optim.LBFGS(p, line_search_fn="armijo")

    def closure():
        opt.zero_grad()
        loss = ((p[0] - 1) ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(closure)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Adadelta", {"rho": 1.5}),
        ("Adadelta", {"lr": -1.0}),
        ("Adamax", {"betas": (0.9, 1.0)}),
        ("NAdam", {"momentum_decay": -0.1}),
        ("RAdam", {"eps": -1.0}),
        ("ASGD", {"weight_decay": -0.5}),
        ("LBFGS", {"lr": -1.0}),
        ("SGD", {"momentum": -0.5}),
        ("Adagrad", {"initial_accumulator_value": -1.0}),
        ("RMSprop", {"alpha": -0.1}),
    ],
)
def test_invalid_hyperparameters_raise_like_torch(name, kwargs):
    with pytest.raises(ValueError) as expected:
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as got:
        getattr(ember.optim, name)([ember.zeros(2, requires_grad=True)], **kwargs)
    assert str(got.value) == str(expected.value)


# --------------------------------------------------------------------------- the shared base
def test_no_optimizer_writes_arrays_directly():
    """Updates are Tensor ops: no module of ember.optim touches a tensor's ``_data``."""
    folder = pathlib.Path(ember.optim.__file__).parent
    offenders = [f.name for f in folder.glob("*.py") if "._data" in f.read_text()]
    assert offenders == []


def test_pytorch_style_subclass_works():
    class SignSGD(ember.optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

        @ember.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.state[p]["n"] = self.state[p].get("n", 0) + 1
                        p.add_(p.grad.sign(), alpha=-group["lr"])

    w = ember.tensor([1.0, -2.0], requires_grad=True)
    opt = SignSGD([w])
    (w * w).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.detach().numpy(), [0.9, -1.9], rtol=1e-6)
    assert opt.state_dict()["state"] == {0: {"n": 1}}

    class Bare(ember.optim.Optimizer):
        pass

    with pytest.raises(NotImplementedError):
        Bare([w], {}).step()


def test_step_bumps_versions_and_runs_under_no_grad():
    for impl in IMPLS.values():
        w = ember.ones(3, requires_grad=True)
        opt = ember.optim.Adam([w], lr=0.1, **impl)
        (w * w).sum().backward()
        v = w._version
        opt.step()
        assert w._version > v and w.grad_fn is None and w.requires_grad


def test_zero_grad_set_to_zero_keeps_tensor():
    w = ember.ones(3, requires_grad=True)
    (w * w).sum().backward()
    g = w.grad
    ember.optim.SGD([w]).zero_grad(set_to_none=False)
    assert w.grad is g and w.grad.tolist() == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- foreach and fused ops
def test_foreach_ops_match_per_tensor_ops():
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(0.5, 2, s) for s in SHAPES]
    others = [rng.uniform(0.5, 2, s) for s in SHAPES]
    ops = [
        ("_foreach_add_", lambda xs, ys: (ys,), {"alpha": 0.5}),
        ("_foreach_mul_", lambda xs, ys: (0.3,), {}),
        ("_foreach_div_", lambda xs, ys: ([1.0, 2.0, 3.0],), {}),
        ("_foreach_addcmul_", lambda xs, ys: (ys, ys, 0.25), {}),
        ("_foreach_addcdiv_", lambda xs, ys: (ys, xs, [1.0, -1.0, 0.5]), {}),
        ("_foreach_lerp_", lambda xs, ys: (ys, 0.1), {}),
        ("_foreach_lerp_", lambda xs, ys: (ys, 0.9), {}),
        ("_foreach_maximum_", lambda xs, ys: (ys,), {}),
        ("_foreach_sqrt_", lambda xs, ys: (), {}),
    ]
    for name, args, kw in ops:
        xe = [ember.tensor(a) for a in arrays]
        xt = [torch.tensor(a) for a in arrays]
        ye = [ember.tensor(a) for a in others]
        yt = [torch.tensor(a) for a in others]
        getattr(ember, name)(xe, *args(xe, ye), **kw)
        getattr(torch, name)(xt, *args(xt, yt), **kw)
        for e, t in zip(xe, xt):
            np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-12, err_msg=name)
    out_e = ember._foreach_sqrt([ember.tensor(a) for a in arrays])
    np.testing.assert_allclose(out_e[1].numpy(), np.sqrt(arrays[1]))


def test_foreach_errors_and_autograd():
    a = [ember.ones(2), ember.ones(3)]
    with pytest.raises(RuntimeError, match="Tensor lists must have the same number of tensors, got 2 and 1"):
        ember._foreach_add_(a, [ember.ones(2)])
    with pytest.raises(RuntimeError, match="at least one tensor"):
        ember._foreach_mul_([], 2.0)
    ints = [ember.ones(2, dtype=ember.int64)]
    ember._foreach_add_(ints, 2)  # integer tensors take the Tensor ops, with their casting rules
    assert ints[0].tolist() == [3, 3]
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        ember._foreach_mul_(ints, 0.5)
    leaf = [ember.ones(2, requires_grad=True)]
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        ember._foreach_mul_(leaf, 2.0)
    # Out-of-place ops record the graph when they must.
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    (y,) = ember._foreach_mul([w], [ember.tensor([3.0, 4.0])])
    y.sum().backward()
    assert w.grad.tolist() == [3.0, 4.0]


def test_fused_kernel_checks_buffers():
    from ember.backends.ckernels import optim as kernels

    if not kernels.available():
        pytest.skip("no C compiler")
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
    with pytest.raises(ValueError, match="should contain 4 elements not 2"):
        kernels.fused_adam(
            [p], [g], [np.zeros(2, np.float32)], [np.zeros(4, np.float32)], None, [1.0], decoupled=False, **kw
        )
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        kernels.fused_adam(
            [p],
            [g.astype(np.float64)],
            [np.zeros(4, np.float32)],
            [np.zeros(4, np.float32)],
            None,
            [1.0],
            decoupled=False,
            **kw,
        )
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.fused_adam(
            [p],
            [np.ones(8, np.float32)[::2]],
            [np.zeros(4, np.float32)],
            [np.zeros(4, np.float32)],
            None,
            [1.0],
            decoupled=False,
            **kw,
        )
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        kernels.fused_sgd(
            [p],
            [g],
            [ro],
            [True],
            lr=0.1,
            momentum=0.9,
            dampening=0.0,
            weight_decay=0.0,
            nesterov=False,
            maximize=False,
        )


def test_fused_ops_take_odd_tensors_through_numpy():
    """Non-contiguous gradients, a float16 parameter and mixed dtypes in one call."""
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (5,)]
    dtypes = [np.float32, np.float64]
    results = {}
    for lib in (ember, torch):
        ps = [lib.tensor(rng.uniform(-1, 1, s).astype(d)) for s, d in zip(shapes, dtypes)]
        gs = [lib.tensor(np.ones((3, 4), np.float32)).t(), lib.tensor(np.full(5, 0.5))]
        ms = [lib.zeros_like(p) for p in ps]
        vs = [lib.zeros_like(p) for p in ps]
        steps = [lib.tensor(1.0), lib.tensor(1.0)]
        lib._fused_adam_(
            ps,
            gs,
            ms,
            vs,
            [],
            steps,
            lr=0.1,
            beta1=0.9,
            beta2=0.99,
            weight_decay=0.1,
            eps=1e-8,
            amsgrad=False,
            maximize=False,
        )
        results[lib.__name__] = [p.numpy() for p in ps]
        rng = np.random.default_rng(1)
    for a, b in zip(results["ember"], results["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- in-place update ops
@pytest.mark.parametrize(
    ("name", "args", "kw"),
    [
        ("addcmul_", ("b", "c"), {"value": 0.3}),
        ("addcdiv_", ("b", "c"), {"value": -2}),
        ("lerp_", ("b", 0.2), {}),
        ("lerp_", ("b", 0.8), {}),
        ("lerp_", ("b", "c"), {}),
        ("sqrt_", (), {}),
    ],
)
def test_inplace_update_ops_match_torch(name, args, kw):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.uniform(0.5, 2, (3, 4)), "b": rng.uniform(0.5, 2, (3, 4)), "c": rng.uniform(0.1, 0.9, (4,))}
    out = []
    for lib in (ember, torch):
        x = lib.tensor(arrays["a"])
        getattr(x, name)(*[lib.tensor(arrays[v]) if isinstance(v, str) else v for v in args], **kw)
        out.append(x.numpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-14)


def test_inplace_update_ops_record_gradients_and_check_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (3, 4))
    grads = []
    for lib in (ember, torch):
        w = lib.tensor(a, requires_grad=True)
        x = w * 1.0
        x.addcmul_(lib.tensor(b), w, value=0.5).lerp_(lib.tensor(b), 0.3).addcdiv_(w, lib.tensor(b)).sqrt_()
        x.sum().backward()
        grads.append(w.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    for call in (
        lambda lib: lib.ones(3, dtype=lib.int64).sqrt_(),
        lambda lib: lib.ones(3).addcmul_(lib.ones(4), lib.ones(4)),
    ):
        with pytest.raises(RuntimeError) as expected:
            call(torch)
        with pytest.raises(RuntimeError) as got:
            call(ember)
        assert str(expected.value).split(" at non-singleton")[0] in str(got.value)
    x = ember.tensor([1.0, float("nan"), 3.0])
    x.maximum_(ember.tensor([2.0, 0.0, float("nan")]))
    np.testing.assert_array_equal(x.numpy(), [2.0, np.nan, np.nan])
