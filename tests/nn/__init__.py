"""Tests of ``ember.nn`` against ``torch.nn``, plus shared helpers for module comparisons."""

from __future__ import annotations

import numpy as np
import torch

import ember
import ember.nn  # noqa: F401 - makes ember.nn available until ember/__init__ imports it
from tests.helpers import assert_close


def load_from_torch(e_mod, t_mod) -> None:
    """Copy torch's state dict into the Ember module through NumPy (strict)."""
    sd = {k: ember.tensor(v.detach().numpy().copy()) for k, v in t_mod.state_dict().items()}
    e_mod.load_state_dict(sd)


def compare_modules(e_mod, t_mod, *inputs, rtol=None, atol=None, grad: bool = True, load: bool = True):
    """Same weights and inputs through both modules; compare outputs and all gradients.

    ``inputs`` are NumPy arrays; float arrays require grad. Returns the two outputs.
    """
    if load:
        load_from_torch(e_mod, t_mod)
    e_in = [ember.tensor(x, requires_grad=grad and x.dtype.kind == "f") for x in inputs]
    t_in = [torch.tensor(x, requires_grad=grad and x.dtype.kind == "f") for x in inputs]
    e_out = e_mod(*e_in)
    t_out = t_mod(*t_in)
    assert_close(e_out, t_out, rtol, atol, "output")
    if not grad:
        return e_out, t_out
    up = np.random.default_rng(3).standard_normal(tuple(t_out.shape)).astype(t_out.detach().numpy().dtype)
    t_out.backward(torch.tensor(up))
    e_out.backward(ember.tensor(up))
    for i, (e, t) in enumerate(zip(e_in, t_in)):
        if t.requires_grad:
            assert_close(e.grad, t.grad, rtol, atol, f"grad of input {i}")
    e_params = dict(e_mod.named_parameters())
    t_params = dict(t_mod.named_parameters())
    assert list(e_params) == list(t_params)
    for name, tp in t_params.items():
        ep = e_params[name]
        if tp.grad is None:
            assert ep.grad is None, f"{name}: ember has a gradient, torch none"
        else:
            assert ep.grad is not None, f"{name}: no gradient in ember"
            assert_close(ep.grad, tp.grad, rtol, atol, f"grad of {name}")
    return e_out, t_out
