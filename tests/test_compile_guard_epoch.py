"""``FastGuards`` skips re-reading an optimizer's state while its counted dicts
(``ember/optim/_tracked.py``) did not change; every kind of change still runs the per-object
comparison (and the full check where something differs), and a state of plain dicts is compared
object by object on every call."""

from __future__ import annotations

import copy
import io
import os
import pickle
from collections import defaultdict

import numpy as np
import pytest

import ember
from ember.compile.effects import FastGuards
from ember.models import MLP
from ember.optim._tracked import MUTATIONS, ParamState, StateDict


def _stepped():
    ember.manual_seed(0)
    m = MLP(in_features=3, hidden=(4,), num_classes=2, dropout=0.0)
    opt = ember.optim.Adam(m.parameters(), lr=0.1)
    m(ember.randn(2, 3)).sum().backward()
    opt.step()
    return m, opt, list(m.parameters())


def _guards(opt, params, monkeypatch):
    """The guards, the full checks run, and per check that compared objects: whether it read
    the optimizer's state (True) or not (False); a check that compared nothing adds nothing."""
    from ember.compile import effects

    calls, reads = [], []
    g = FastGuards(lambda: calls.append(1) or True, tensors=params, none=params, opts=[opt])
    sig, loose, state_sig = g._signature, g._loose_signature, effects._state_signature
    seen = []

    def spy_state(*a):
        seen.append(1)
        return state_sig(*a)

    def spy(datas, uncounted):
        seen.clear()
        out = sig(datas, uncounted)
        reads.append(bool(seen))
        return out

    def spy_loose(uncounted):
        seen.clear()
        out = loose(uncounted)
        if seen:
            reads.append(True)
        return out

    monkeypatch.setattr(effects, "_state_signature", spy_state)
    g._signature, g._loose_signature = spy, spy_loose
    return g, calls, reads


def test_an_unchanged_state_is_not_read_again(monkeypatch):
    _, opt, params = _stepped()
    assert type(opt.state) is StateDict and all(type(s) is ParamState for s in opt.state.values())
    g, calls, reads = _guards(opt, params, monkeypatch)
    assert g.check() and calls == [1]
    reads.clear()
    for _ in range(3):
        assert g.check()
    assert calls == [1] and reads == []  # nothing but the groups compared: the stamp held


@pytest.mark.parametrize(
    "change",
    [
        lambda s, p, q: s[p].__setitem__("exp_avg", ember.zeros(1)),
        lambda s, p, q: s[p].__delitem__("exp_avg"),
        lambda s, p, q: s[p].pop("exp_avg"),
        lambda s, p, q: s[p].popitem(),
        lambda s, p, q: s[p].setdefault("extra", 1),
        lambda s, p, q: s[p].update(exp_avg=ember.zeros(1)),
        lambda s, p, q: s[p].__ior__({"exp_avg": ember.zeros(1)}),
        lambda s, p, q: s[p].clear(),
        lambda s, p, q: s.__delitem__(p),
        lambda s, p, q: s.pop(p),
        lambda s, p, q: s.popitem(),
        lambda s, p, q: s.clear(),
        lambda s, p, q: s[q],  # a new parameter's state made by the defaultdict
        lambda s, p, q: s.__setitem__(p, dict(s[p])),  # a plain dict in its place
        lambda s, p, q: s.update({p: ParamState(s[p])}),
        lambda s, p, q: s.setdefault(q, ParamState()),
    ],
)
def test_each_change_to_the_state_runs_the_full_check(change, monkeypatch):
    _, opt, params = _stepped()
    g, calls, reads = _guards(opt, params, monkeypatch)
    assert g.check() and g.check() and calls == [1]
    before = MUTATIONS[0]
    change(opt.state, params[0], ember.zeros(2, requires_grad=True))
    assert MUTATIONS[0] > before
    assert g.check() and calls == [1, 1]
    assert g.check() and calls == [1, 1]


def test_the_same_object_written_back_is_no_change(monkeypatch):
    _, opt, params = _stepped()
    g, calls, reads = _guards(opt, params, monkeypatch)
    assert g.check()
    before = MUTATIONS[0]
    s = opt.state[params[0]]
    s["exp_avg"] = s["exp_avg"]  # a compiled step's writeback of the value it already holds
    assert MUTATIONS[0] == before
    reads.clear()
    assert g.check() and calls == [1] and reads == []


def test_plain_dict_states_are_compared_object_by_object_every_call(monkeypatch):
    _, opt, params = _stepped()
    opt.state[params[0]] = dict(opt.state[params[0]])  # plain: its changes are not counted
    g, calls, reads = _guards(opt, params, monkeypatch)
    assert g.check() and calls == [1]
    reads.clear()
    assert g.check() and calls == [1] and reads == [True]  # read in full, nothing changed
    opt.state[params[0]]["exp_avg"] = ember.zeros(1)  # not counted, still seen
    assert g.check() and calls == [1, 1]
    opt.state = defaultdict(dict, opt.state)  # a plain state dict replacing the optimizer's
    assert g.check() and calls == [1, 1, 1]
    dict.__setitem__(opt.state[params[1]], "exp_avg", ember.zeros(1))
    assert g.check() and calls == [1, 1, 1, 1]


def test_compiled_step_recompiles_after_a_state_change_and_matches_eager():
    ember.manual_seed(0)
    models = [MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [ember.optim.Adam(m.parameters(), lr=1e-2) for m in models]
    x, y = ember.randn(4, 6), ember.randint(0, 3, (4,))

    def make(m, opt):
        def step():
            opt.zero_grad()
            loss = ember.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    fn, ref = ember.compile(make(models[0], opts[0])), make(models[1], opts[1])
    for _ in range(3):
        fn(), ref()
    n = fn.recompiles
    for opt in opts:  # a state tensor swapped for one with other values: the graph read the old one
        p = opt.param_groups[0]["params"][0]
        opt.state[p].update(exp_avg_sq=opt.state[p]["exp_avg_sq"] * 4.0)
    for _ in range(2):
        fn(), ref()
    if os.environ.get("EMBER_CKERNELS") != "0":  # graph counts need the C kernels (as test_compile_step's)
        assert fn.recompiles == n + 1
    for a, b in zip(*(m.parameters() for m in models)):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_loaded_copied_and_pickled_states():
    _, opt, params = _stepped()
    opt2 = ember.optim.Adam(params, lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    assert type(opt2.state) is StateDict and all(type(s) is ParamState for s in opt2.state.values())
    clone = copy.deepcopy(opt)
    assert set(map(len, clone.state.values())) == {3}
    data = pickle.loads(pickle.dumps(opt.state_dict()))
    assert all(type(s) is dict for s in data["state"].values())  # saved as plain dicts
    buf = io.BytesIO()
    ember.save(opt.state_dict(), buf)
    buf.seek(0)
    opt3 = ember.optim.Adam(params, lr=0.1)
    opt3.load_state_dict(ember.load(buf))
    assert type(opt3.state) is StateDict
    np.testing.assert_array_equal(opt3.state[params[0]]["exp_avg"].numpy(), opt.state[params[0]]["exp_avg"].numpy())


def test_copies_are_counted_dicts_of_the_same_values():
    _, opt, params = _stepped()
    for c in (copy.copy(opt.state), opt.state.copy()):
        assert type(c) is StateDict and c is not opt.state and c[params[0]] is opt.state[params[0]]
        before = MUTATIONS[0]
        c[params[0]]["exp_avg"] = ember.zeros(1)
        assert MUTATIONS[0] > before
        c[ember.zeros(1)]  # made by the default factory
        assert len(c) == len(opt.state) + 1
    s = opt.state[params[1]]
    assert type(s.copy()) is ParamState and s.copy() == s and copy.copy(s) is not s
