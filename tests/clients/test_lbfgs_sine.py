"""Client program: fit a sine with a small MLP and L-BFGS (strong-Wolfe line search).

The pattern of pytorch/examples' ``time_sequence_prediction`` (LBFGS with a closure), on a
smaller model: the same code runs with ``lib`` = ember and torch, from the same weights and
data, in float64. The closure's losses at every outer step must agree within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import torch

import ember

STEPS = 6


def _fit(lib, weights, xs, ys):
    nn = lib.nn
    model = nn.Sequential(nn.Linear(1, 20), nn.Tanh(), nn.Linear(20, 1)).double()
    model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    criterion = nn.MSELoss()
    optimizer = lib.optim.LBFGS(model.parameters(), lr=0.8, max_iter=10, history_size=10, line_search_fn="strong_wolfe")
    x, y = lib.tensor(xs), lib.tensor(ys)
    losses = []
    for _ in range(STEPS):

        def closure():
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    with lib.no_grad():
        final = criterion(model(x), y).item()
    return losses, final


def test_lbfgs_sine_fit_matches_torch():
    torch.manual_seed(0)
    ref_model = torch.nn.Sequential(torch.nn.Linear(1, 20), torch.nn.Tanh(), torch.nn.Linear(20, 1)).double()
    weights = {k: v.detach().numpy().copy() for k, v in ref_model.state_dict().items()}
    xs = np.linspace(-np.pi, np.pi, 100).reshape(-1, 1)
    ys = np.sin(xs)
    mine, mine_final = _fit(ember, weights, xs, ys)
    ref, ref_final = _fit(torch, weights, xs, ys)
    np.testing.assert_allclose(mine, ref, rtol=1e-4)
    np.testing.assert_allclose(mine_final, ref_final, rtol=1e-4)
    assert ref_final < 0.01 * ref[0]  # it fits
