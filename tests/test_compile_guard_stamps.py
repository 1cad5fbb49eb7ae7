"""The mutation stamp (``ember/_mutations.py``) that lets a compiled step's guards pass in one
comparison: every way a user can change what a step graph depends on still recompiles or gives
eager's result, and while the stamp stands, what the skipped comparisons would have read is
really unchanged (checked on every call here: ``paranoid``).

Each scenario runs a compiled step and the same step eagerly side by side (the oracle), makes
the change to both, and compares parameters, gradients and losses."""

from __future__ import annotations

import os
import weakref

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember._mutations import GRAD_READS, MUTATIONS
from ember.compile import effects, step_run
from ember.models import MLP

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or os.environ.get("EMBER_STEP_PROGRAM") == "0"
    or os.environ.get("EMBER_PROGRAM") == "0",
    reason="whole-step programs need the C kernels and a compiler",
)


@pytest.fixture(autouse=True)
def paranoid(monkeypatch):
    """On every call: where the stamp lets the guard check pass, the full signature it skipped
    must equal the last one; where the output check skips reading each ``p.grad`` and array,
    they must be what it assumes. Returns the counts of fast passes."""
    seen = {"guards": 0, "outputs": 0, "quiet": 0}
    check, outputs = effects.FastGuards.check, step_run.FastStep._outputs

    def checked(self):
        fast = self._valid is not None and MUTATIONS[0] == self._valid
        ok = check(self)
        if fast and ok and self._valid == MUTATIONS[0]:
            datas = list(map(effects._DATA, self.tensors))
            ids, flags, _other, _n = self._signature(datas, self._uncounted)
            assert ids == self._ids and flags == self._flags, "the stamp stood over a change"
            seen["guards"] += 1
        return ok

    def checked_outputs(self):
        if step_run._WRITER[0] == self.token and MUTATIONS[0] == self.wb_epoch:
            kept = [r() for r in self.refs]
            if all(t is not None for t in kept):  # the fast check runs: what it assumes holds
                assert all(t._data is a for t, a in zip(kept, self.arrays))  # (no name left holding one)
                assert [id(p._grad) for p in self.wb_params] == self.last_grads
                seen["outputs"] += 1
            if self.unseen and GRAD_READS[0] == self.reads_epoch:  # nothing is read: all is free
                assert all(t is not None for t in kept) and self._not_free(kept) == []
                seen["quiet"] += 1
            del kept
        return outputs(self)

    monkeypatch.setattr(effects.FastGuards, "check", checked)
    monkeypatch.setattr(step_run.FastStep, "_outputs", checked_outputs)
    return seen


def _pair(opt_cls=ember.optim.Adam, batch_norm=False, zero_at_end=False, **opt_kw):
    """``[(step, model, optimizer)]`` twice with equal weights: compiled, then eager."""
    out = []
    for compiled in (True, False):
        ember.manual_seed(0)
        model = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0, batch_norm=batch_norm)
        opt = opt_cls(model.parameters(), lr=1e-2, **opt_kw)
        ember.manual_seed(1)
        x, y = ember.randn(5, 6), ember.randint(0, 3, (5,))

        def step(model=model, opt=opt, x=x, y=y):
            if not zero_at_end:
                opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if zero_at_end:
                opt.zero_grad()
            return loss

        out.append((ember.compile(step) if compiled else step, model, opt))
    return out


def _same(pair, losses=None):
    (_, m1, _), (_, m2, _) = pair
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
        assert (a.grad is None) == (b.grad is None), n
        if a.grad is not None:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
    for a, b in losses or ():
        np.testing.assert_allclose(a, b, rtol=1e-5)


def _run(pair, n, eager_first=False):
    """``n`` compiled steps, then ``n`` eager ones (or the other way round): the losses. The
    eager steps count (their backward sets .grad): run last, they would hide a change the stamp
    misses; run first, the compiled steps after the first one pass on the stamp."""
    fn, ref = pair[0][0], pair[1][0]
    if eager_first:
        want = [ref().item() for _ in range(n)]
        got = [fn().item() for _ in range(n)]
    else:
        got = [fn().item() for _ in range(n)]
        want = [ref().item() for _ in range(n)]
    return list(zip(got, want))


def _first_linear(m):
    return next(x for x in m.modules() if isinstance(x, ember.nn.Linear))


def _param(m):
    return next(iter(m.parameters()))


def test_the_stamp_stands_in_steady_state_and_the_step_writes_quietly(paranoid):
    pair = _pair()
    _run(pair, 3)
    fn = pair[0][0]
    entry = list(fn.cache.values())[-1]
    assert entry.fast_step.quiet  # the .grad writebacks keep the graph's guards
    paranoid.update(guards=0, outputs=0, quiet=0)
    before = MUTATIONS[0]
    got = [fn().item() for _ in range(4)]
    assert MUTATIONS[0] == before  # the compiled step's own writebacks do not count
    # the first call follows the eager step of _run (its backward counts): compared in full;
    # then nobody read a .grad: the gradients' arrays are reused without reading them
    assert paranoid == {"guards": 3, "outputs": 3, "quiet": 3}
    want = [pair[1][0]().item() for _ in range(4)]
    assert MUTATIONS[0] > before
    _same(pair, zip(got, want))
    paranoid.update(guards=0, outputs=0, quiet=0)
    fn()
    assert paranoid == {"guards": 0, "outputs": 0, "quiet": 0}


def _assign_data(m, opt):
    p = _param(m)
    p.data = p.data * 0.5


def _grad_none(m, opt):
    _param(m).grad = None


def _new_grad(m, opt):
    p = _param(m)
    p.grad = ember.ones_like(p)


def _requires_grad_off(m, opt):
    _param(m).requires_grad_(False)


def _detach_(m, opt):
    _param(m).detach_()


def _eval(m, opt):
    m.eval()


def _training_attr(m, opt):
    m.net[1].training = False  # one module, by attribute


def _replace_parameter(m, opt):
    lin = _first_linear(m)
    ember.manual_seed(5)
    lin.weight = ember.nn.Parameter(ember.randn(*lin.weight.shape) * 0.1)


def _replace_module(m, opt):
    ember.manual_seed(6)
    m.net[-1] = ember.nn.Linear(8, 3)


def _insert_module(m, opt):
    m.net.insert(len(m.net) - 1, ember.nn.Tanh())  # Sequential.insert writes _modules directly


def _delete_module(m, opt):
    del m.net[2]  # the ReLU


def _delete_bias(m, opt):
    lin = _first_linear(m)
    del lin.bias
    lin.bias = None


def _add_param_group(m, opt):
    ember.manual_seed(7)
    opt.add_param_group({"params": [ember.nn.Parameter(ember.randn(2))], "lr": 1e-3})


def _load_state_dict(m, opt):
    sd = opt.state_dict()
    for s in sd["state"].values():  # other values, so a graph that kept the old ones would differ
        s["exp_avg"] = s["exp_avg"] * 0.5
    opt.load_state_dict(sd)


def _model_load_state_dict(m, opt):
    sd = {k: v * 0.5 for k, v in m.state_dict().items()}
    m.load_state_dict(sd)


def _inplace_no_grad(m, opt):
    with ember.no_grad():
        _param(m).mul_(0.5)


def _lr(m, opt):
    opt.param_groups[0]["lr"] = 3e-3


def _lr_same_value(m, opt):
    opt.param_groups[0]["lr"] = float(str(opt.param_groups[0]["lr"]))  # a new float, the same value


def _state_tensor(m, opt):
    p = _param(m)
    opt.state[p]["exp_avg"] = ember.zeros_like(opt.state[p]["exp_avg"])


def _resize(m, opt):
    p = _param(m)
    shape = p.shape
    with ember.no_grad():
        p.resize_(*shape)  # a new array (zeros) of the same shape


def _eager_backward(m, opt):
    ember.manual_seed(8)
    F.cross_entropy(m(ember.randn(2, 6)), ember.tensor([0, 1])).backward()  # accumulates into .grad


def _zero_grad_in_place(m, opt):
    opt.zero_grad(set_to_none=False)


def _to_float64_and_back(m, opt):
    m.double()
    m.float()


CHANGES = [
    _assign_data,
    _grad_none,
    _new_grad,
    _requires_grad_off,
    _detach_,
    _eval,
    _training_attr,
    _replace_parameter,
    _replace_module,
    _insert_module,
    _delete_module,
    _delete_bias,
    _add_param_group,
    _load_state_dict,
    _model_load_state_dict,
    _inplace_no_grad,
    _lr,
    _lr_same_value,
    _state_tensor,
    _resize,
    _eager_backward,
    _zero_grad_in_place,
    _to_float64_and_back,
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_every_change_is_seen_and_the_result_is_eagers(change, paranoid):
    pair = _pair()
    _same(pair, _run(pair, 4, eager_first=True))
    assert paranoid["guards"] >= 2  # the stamp stands when the change comes
    for _, m, opt in pair:
        change(m, opt)
    _same(pair)
    _same(pair, _run(pair, 3))


@pytest.mark.parametrize("change", [_eval, _training_attr])
def test_train_eval_with_batch_norm_changes_the_result(change):
    # SGD: the gradient of a bias feeding batch norm is rounding noise (~1e-9), which Adam scales
    # to steps of ~lr, so compiled and eager (rounding differently) would drift apart there
    pair = _pair(ember.optim.SGD, batch_norm=True)
    _same(pair, _run(pair, 3, eager_first=True))
    fn = pair[0][0]
    n = fn.recompiles
    for _, m, opt in pair:
        change(m, opt)
    _same(pair, _run(pair, 3))
    assert fn.recompiles > n  # batch norm's running statistics instead of the batch's


@pytest.mark.parametrize("change", [_eager_backward, _new_grad, _assign_data, _requires_grad_off, _lr])
def test_steps_that_leave_no_gradients(change, paranoid):
    """``.grad`` is None between these steps (the graph assumes it): a backward outside them
    (the engine's writes count) gives the next step gradients to accumulate into."""
    pair = _pair(zero_at_end=True)
    _same(pair, _run(pair, 4, eager_first=True))
    assert paranoid["guards"] >= 2
    for _, m, opt in pair:
        change(m, opt)
    _same(pair, _run(pair, 3))


def test_a_replaced_parameter_recompiles():
    pair = _pair(ember.optim.SGD)
    _run(pair, 3, eager_first=True)
    fn = pair[0][0]
    n = fn.recompiles
    for _, m, opt in pair:
        _replace_parameter(m, opt)
    _same(pair, _run(pair, 3))
    # the new weight is not the optimizer's: its .grad (None, then accumulating) is two graphs
    assert fn.recompiles == n + 2


def test_two_compiled_steps_over_one_model_alternate():
    """Each writes ``.grad`` without counting; the other still sees new tensors there."""
    ember.manual_seed(0)
    models = [MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [ember.optim.SGD(m.parameters(), lr=1e-1) for m in models]
    ember.manual_seed(1)
    xs = [ember.randn(5, 6), ember.randn(3, 6)]
    y = ember.randint(0, 3, (5,))
    ys = [y, y[:3]]

    def make(m, opt, x, y, zero):
        def step():
            if zero:
                opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    compiled = [ember.compile(make(models[0], opts[0], x, t, k == 0)) for k, (x, t) in enumerate(zip(xs, ys))]
    eager = [make(models[1], opts[1], x, t, k == 0) for k, (x, t) in enumerate(zip(xs, ys))]
    held = []
    for i in range(8):
        k = i % 2 if i < 4 else int(i in (4, 5, 7))
        a, b = compiled[k](), eager[k]()
        np.testing.assert_allclose(a.item(), b.item(), rtol=1e-5)
        if i == 5:
            held.append((_param(models[0]).grad, _param(models[0]).grad.numpy().copy()))
    _same([(None, models[0], None), (None, models[1], None)])
    for g, values in held:  # a gradient held by the user keeps its values
        np.testing.assert_array_equal(g.numpy(), values)


def test_held_gradients_and_attributes_with_a_standing_stamp(paranoid):
    pair = _pair()
    _run(pair, 3)
    p = _param(pair[0][1])
    g = p.grad
    kept = g.numpy().copy()
    _same(pair, _run(pair, 2))
    np.testing.assert_array_equal(g.numpy(), kept)  # a new array: this one is the user's
    del g
    p.grad.note = "mine"  # an attribute: that tensor is never reused
    _run(pair, 1)
    assert not hasattr(p.grad, "note")
    _same(pair)


def test_module_setattr_of_the_same_value_does_not_count():
    m = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0)
    before = MUTATIONS[0]
    m.train()  # already training
    w = _param(m)
    w.requires_grad_(True)  # already
    w.grad = None  # already
    assert MUTATIONS[0] == before
    m.eval()
    assert MUTATIONS[0] > before


TENSOR_CHANGES = {
    "data": lambda t: setattr(t, "data", ember.zeros(2)),
    "grad": lambda t: setattr(t, "grad", ember.zeros(2)),
    "requires_grad": lambda t: t.requires_grad_(False),
    "detach_": lambda t: t.detach_(),
    "resize_": lambda t: t.resize_(3),
    "unsqueeze_": lambda t: t.unsqueeze_(0),
    "out=": lambda t: ember.zeros(2, out=t),
    "in-place with history": lambda t: t.add_(ember.ones(2, requires_grad=True)),
}


@pytest.mark.parametrize("name", list(TENSOR_CHANGES))
def test_each_tensor_rebinding_counts(name):
    t = ember.ones(2, requires_grad=name in ("requires_grad", "detach_"))
    before = MUTATIONS[0]
    with ember.no_grad() if name in ("resize_", "unsqueeze_") else ember.enable_grad():
        TENSOR_CHANGES[name](t)
    assert MUTATIONS[0] > before


ACCESS = {
    "tensor": lambda p: p.grad,
    "array": lambda p: p.grad.numpy(),
    "view": lambda p: p.grad[0],
    "weakref": lambda p: weakref.ref(p.grad),
}


@pytest.mark.parametrize("name", list(ACCESS))
def test_a_gradient_reached_through_grad_is_never_reused(name, paranoid):
    """While nobody reads ``.grad``, a step reuses its gradients' arrays without looking at them;
    one read (the public way to reach a gradient) makes the next call check each by count."""
    pair = _pair()
    _run(pair, 4, eager_first=True)
    fn = pair[0][0]
    fn()
    paranoid.update(quiet=0)
    fn()
    assert paranoid["quiet"] == 1  # nothing read: nothing checked
    p = _param(pair[0][1])
    held = ACCESS[name](p)
    if name == "weakref":
        fn()
        assert held() is None  # eager drops the old gradient tensor; so does the step
    else:
        values = np.array(held.numpy() if name != "array" else held, copy=True)
        fn()
        np.testing.assert_array_equal(held.numpy() if name != "array" else held, values)
        assert p.grad is not held


MODULE_CHANGES = {
    "parameter replaced": lambda m: setattr(m[0], "weight", ember.nn.Parameter(ember.ones(8, 6) * 0.1)),
    "module replaced": lambda m: m.__setitem__(2, ember.nn.Tanh()),
    "module inserted": lambda m: m.insert(2, ember.nn.Tanh()),
    "module deleted": lambda m: m.__delitem__(1),
    "buffer registered": lambda m: m[0].register_buffer("extra", ember.zeros(1)),
}


@pytest.mark.parametrize("name", list(MODULE_CHANGES))
def test_module_only_compile_follows_its_modules(name):
    """``ember.compile(model)`` (a forward graph) compares its modules' parameters, buffers and
    children only when one of them changed anywhere (``STRUCTURE``), and then recompiles."""
    ember.manual_seed(0)
    model = ember.nn.Sequential(ember.nn.Linear(6, 8), ember.nn.ReLU(), ember.nn.Linear(8, 3))
    cm = ember.compile(model)
    x = ember.randn(4, 6)
    with ember.no_grad():
        cm(x), cm(x)
    entry = list(cm._compiled.cache.values())[-1]
    seen, before = entry.structure_seen, MUTATIONS[0]
    model(x).sum().backward()  # moves MUTATIONS, not STRUCTURE
    with ember.no_grad():
        cm(x)
    assert MUTATIONS[0] > before and entry.structure_seen == seen  # the modules not compared again
    n = cm._compiled.recompiles
    MODULE_CHANGES[name](model)
    with ember.no_grad():  # the same key (grad mode off) as before
        np.testing.assert_allclose(cm(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    assert cm._compiled.recompiles == n + 1
