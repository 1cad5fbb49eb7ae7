"""Module, Parameter and container behaviour compared with torch.nn."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

import ember
from ember import nn
from tests.helpers import assert_close, rand
from tests.nn import compare_modules, load_from_torch


def _nested(lib):
    class Block(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = lib.nn.Linear(4, 4)
            self.norm = lib.nn.LayerNorm(4)
            self.register_buffer("scale", lib.ones(4))
            self.register_buffer("cache", lib.zeros(2), persistent=False)

        def forward(self, x):
            return self.norm(self.fc(x)) * self.scale

    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = lib.nn.Linear(3, 4)
            self.blocks = lib.nn.ModuleList([Block() for _ in range(2)])
            self.head = lib.nn.Sequential(
                OrderedDict([("act", lib.nn.GELU()), ("drop", lib.nn.Dropout(0.1)), ("out", lib.nn.Linear(4, 2))])
            )
            self.bn = lib.nn.BatchNorm1d(2)

        def forward(self, x):
            h = self.embed(x)
            for b in self.blocks:
                h = h + b(h)
            return self.bn(self.head(h))

    return Net()


def test_names_keys_and_repr_match_torch():
    e, t = _nested(ember), _nested(torch)
    assert [n for n, _ in e.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert [n for n, _ in e.named_buffers()] == [n for n, _ in t.named_buffers()]
    assert [n for n, _ in e.named_modules()] == [n for n, _ in t.named_modules()]
    assert [n for n, _ in e.named_children()] == [n for n, _ in t.named_children()]
    assert list(e.state_dict()) == list(t.state_dict())
    assert "blocks.0.cache" not in e.state_dict()
    assert repr(e) == repr(t)


def test_nested_model_forward_backward_matches_torch():
    e, t = _nested(ember), _nested(torch)
    e.eval()
    t.eval()
    compare_modules(e, t, rand(5, 3))


def test_sequential_repr_matches_torch():
    def build(lib):
        return lib.nn.Sequential(
            lib.nn.Linear(2, 3),
            lib.nn.ReLU(),
            lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.Tanh()),
            lib.nn.Softmax(-1),
        )

    assert repr(build(ember)) == repr(build(torch))
    ml = [lib.nn.ModuleList([lib.nn.Linear(2, 2) for _ in range(3)] + [lib.nn.ReLU()]) for lib in (ember, torch)]
    assert repr(ml[0]) == repr(ml[1])


def test_state_dict_values_are_detached_and_share_memory():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert not sd["weight"].requires_grad and not isinstance(sd["weight"], nn.Parameter)
    sd["weight"].zero_()
    assert float(m.weight.abs().sum()) == 0.0
    assert m.state_dict(keep_vars=True)["weight"] is m.weight


def test_load_state_dict_copies_in_place():
    m = nn.Linear(3, 2)
    w = m.weight
    src = nn.Linear(3, 2)
    res = m.load_state_dict(src.state_dict())
    assert m.weight is w
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    np.testing.assert_array_equal(m.weight.detach().numpy(), src.weight.detach().numpy())


def test_strict_load_errors_match_torch():
    def attempt(lib):
        m = lib.nn.Sequential(lib.nn.Linear(3, 2), lib.nn.Linear(2, 2))
        sd = {
            "0.weight": lib.zeros(2, 3),
            "1.weight": lib.zeros(4, 2),
            "1.bias": lib.zeros(2),
            "extra": lib.zeros(1),
            "2.weight": lib.zeros(1),
        }
        with pytest.raises(RuntimeError) as info:
            m.load_state_dict(sd)
        res = m.load_state_dict({k: v for k, v in sd.items() if k != "1.weight"}, strict=False)
        return str(info.value), res

    e_msg, e_res = attempt(ember)
    t_msg, t_res = attempt(torch)
    assert e_msg.replace("ember.Size", "torch.Size") == t_msg
    assert e_res.missing_keys == t_res.missing_keys == ["0.bias", "1.weight"]
    assert e_res.unexpected_keys == t_res.unexpected_keys == ["extra", "2.weight"]


def test_tied_parameters_counted_once_and_keys_twice():
    def build(lib):
        enc = lib.nn.Embedding(5, 4)
        dec = lib.nn.Linear(4, 5, bias=False)
        dec.weight = enc.weight
        return lib.nn.ModuleDict({"enc": enc, "dec": dec})

    e, t = build(ember), build(torch)
    assert [n for n, _ in e.named_parameters()] == [n for n, _ in t.named_parameters()] == ["enc.weight"]
    assert len(list(e.parameters())) == 1
    assert list(e.state_dict()) == list(t.state_dict()) == ["enc.weight", "dec.weight"]
    assert len(list(e.named_parameters(remove_duplicate=False))) == 2


def test_shared_module_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]


def test_parameter_basics():
    data = ember.ones(3)
    p = nn.Parameter(data)
    assert p.requires_grad and p.is_leaf and isinstance(p, ember.Tensor)
    data[0] = 5.0
    assert float(p[0]) == 5.0  # shares memory
    assert repr(p) == "Parameter containing:\ntensor([5., 1., 1.], requires_grad=True)"
    assert not nn.Parameter(ember.zeros(2), requires_grad=False).requires_grad
    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and q.requires_grad and q._data is not p._data
    r = pickle.loads(pickle.dumps(p))
    assert isinstance(r, nn.Parameter) and r.tolist() == p.tolist()
    assert type(p * 2) is ember.Tensor


def test_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(ember.zeros(2))
    assert "w" in m._parameters and "w" not in m.__dict__
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = ember.zeros(2)
    m.w = None
    assert m.w is None and list(m.state_dict()) == []
    m.register_buffer("b", ember.ones(1))
    m.b = ember.zeros(1)
    assert float(m.b) == 0.0
    with pytest.raises(TypeError):
        m.b = 3
    with pytest.raises(KeyError):
        m.register_buffer("a.b", ember.ones(1))
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("training", None)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing  # noqa: B018
    m.sub = nn.Linear(1, 1)
    del m.sub
    assert "sub" not in m._modules
    m.buf = nn.Buffer(ember.ones(2), persistent=False)
    assert "buf" in m._buffers and "buf" not in m.state_dict()
    with pytest.raises(AttributeError, match="before Module.__init__"):

        class Bad(nn.Module):
            def __init__(self):
                self.p = nn.Parameter(ember.zeros(1))

        Bad()


def test_non_leaf_parameter_rejected():
    m = nn.Module()
    x = ember.ones(2, requires_grad=True)
    p = nn.Parameter(ember.ones(2))
    p._node = (x * 2)._node
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("p", p)


def test_train_eval_apply_zero_grad_requires_grad():
    m = _nested(ember)
    assert all(x.training for x in m.modules())
    m.eval()
    assert not any(x.training for x in m.modules())
    with pytest.raises(ValueError):
        m.train("yes")
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen[-1] == "Net" and seen[0] == "Linear"
    m.train()
    m(ember.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_to_dtype_keeps_parameter_objects():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    w = m[0].weight
    m.double()
    assert m[0].weight is w and w.dtype == ember.float64
    assert m[1].running_mean.dtype == ember.float64
    assert m[1].num_batches_tracked.dtype == ember.int64
    m.to(ember.float32)
    assert w.dtype == ember.float32
    m.half().float()
    assert m[0](ember.ones(1, 2)).dtype == ember.float32
    with pytest.raises(TypeError):
        m.to(ember.int64)


def test_hooks():
    m = nn.Linear(2, 2)
    calls = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape) or out + 1)
    out = m(ember.ones(1, 2))
    np.testing.assert_allclose(out.detach().numpy(), (m.bias + 1).detach().numpy()[None])
    assert calls == [ember.Size([1, 2])]
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(m(ember.zeros(1, 2)).detach().numpy(), m.bias.detach().numpy()[None])
    assert len(calls) == 1
    with m.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs), with_kwargs=True):
        m(input=ember.ones(1, 2))
    assert calls[-1].keys() == {"input"}
    order = []
    m.register_forward_pre_hook(lambda mod, a: order.append(1))
    m.register_forward_pre_hook(lambda mod, a: order.append(0), prepend=True)
    m(ember.ones(1, 2))
    assert order == [0, 1]


def test_missing_forward():
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


def test_get_submodule_parameter_dir_deepcopy():
    m = _nested(ember)
    assert m.get_submodule("blocks.1.fc") is m.blocks[1].fc
    assert m.get_parameter("head.out.bias") is m.head.out.bias
    assert m.get_buffer("blocks.0.scale") is m.blocks[0].scale
    with pytest.raises(AttributeError):
        m.get_submodule("blocks.5")
    assert {"embed", "blocks", "head", "forward"} <= set(dir(m))
    c = copy.deepcopy(m)
    assert c.blocks[0].fc.weight is not m.blocks[0].fc.weight
    assert isinstance(c.blocks[0].fc.weight, nn.Parameter)
    np.testing.assert_array_equal(c.embed.weight.detach().numpy(), m.embed.weight.detach().numpy())
    assert list(c.state_dict()) == list(m.state_dict())


def test_sequential_api():
    a, b, c = nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3)
    s = nn.Sequential(a, b)
    s.append(c)
    assert len(s) == 3 and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub._modules) == ["1", "2"]  # torch keeps the original keys on slicing
    del s[0]
    assert list(s._modules) == ["0", "1"] and s[0] is b
    s.insert(0, a)
    assert list(s) == [a, b, c]
    s2 = nn.Sequential(OrderedDict([("x", a), ("y", b)]))
    assert s2.x is a and list(s2.state_dict()) == ["x.weight", "x.bias"]
    assert len(s + s2) == 5
    with pytest.raises(IndexError):
        s[7]
    assert s(ember.ones(4, 2)).shape == (4, 3)


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml.extend([nn.ReLU(), nn.Tanh()])
    ml.append(nn.Sigmoid())
    ml.insert(1, nn.Identity())
    assert [type(x).__name__ for x in ml] == ["Linear", "Identity", "ReLU", "Tanh", "Sigmoid"]
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    assert ml.index(ml[2]) == 2
    del ml[0]
    assert list(ml._modules) == ["0", "1", "2", "3"]
    md = nn.ModuleDict({"a": nn.Linear(1, 2)})
    md["b"] = nn.ReLU()
    md.update([("c", nn.Tanh())])
    assert list(md.keys()) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert list(md.state_dict()) == ["a.weight", "a.bias"]
    assert isinstance(md.pop("b"), nn.ReLU) and len(md) == 2


def test_parameter_list_and_dict_match_torch():
    def build(lib):
        m = lib.nn.Module()
        m.pl = lib.nn.ParameterList([lib.nn.Parameter(lib.zeros(2)), lib.ones(3)])
        m.pd = lib.nn.ParameterDict({"a": lib.nn.Parameter(lib.zeros(1))})
        m.pd["b"] = lib.zeros(2, 2)
        return m

    e, t = build(ember), build(torch)
    assert list(e.state_dict()) == list(t.state_dict()) == ["pl.0", "pl.1", "pd.a", "pd.b"]
    assert isinstance(e.pl[1], nn.Parameter) and isinstance(e.pd["b"], nn.Parameter)
    assert repr(e).replace("ember.", "torch.") == repr(t)


def test_torch_state_dict_round_trip_nested():
    e, t = _nested(ember), _nested(torch)
    load_from_torch(e, t)
    for k, v in t.state_dict().items():
        assert_close(e.state_dict()[k], v, what=k)


def test_state_dict_hooks_and_extra_state():
    class WithExtra(nn.Module):
        def __init__(self):
            super().__init__()
            self.counter = 0

        def get_extra_state(self):
            return {"counter": self.counter}

        def set_extra_state(self, state):
            self.counter = state["counter"]

    m = nn.Sequential(WithExtra())
    m[0].counter = 7
    sd = m.state_dict()
    assert list(sd) == ["0._extra_state"]
    m2 = nn.Sequential(WithExtra())
    m2.load_state_dict(sd)
    assert m2[0].counter == 7
    seen = []
    m2.register_load_state_dict_post_hook(lambda mod, keys: seen.append(list(keys.missing_keys)))
    m2.load_state_dict(sd)
    assert seen == [[]]
