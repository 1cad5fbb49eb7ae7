"""Helpers of the api-core client programs: copy torch weights into Ember, compare loss curves."""

from __future__ import annotations

import numpy as np

import ember


def copy_weights(torch_module, ember_module) -> None:
    """Load a torch module's state dict into the Ember module of the same structure."""
    state = {k: ember.tensor(v.detach().cpu().numpy()) for k, v in torch_module.state_dict().items()}
    ember_module.load_state_dict(state)


def assert_losses_close(ember_losses, torch_losses, rtol: float = 1e-4) -> None:
    """Every step's loss agrees within ``rtol`` relative, as the client-program rule asks."""
    e, t = np.asarray(ember_losses, dtype=np.float64), np.asarray(torch_losses, dtype=np.float64)
    assert e.shape == t.shape and np.isfinite(e).all()
    np.testing.assert_allclose(e, t, rtol=rtol, atol=0)
