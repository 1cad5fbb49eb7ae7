"""Client program: REINFORCE with a ``distributions.Categorical`` policy on a small corridor
environment, a few updates on Ember and on PyTorch from the same weights.

Draws come from different generators, so Ember's run samples the actions and PyTorch's run replays
them (its policy must give each one positive probability); with the same trajectories, the
policy-gradient losses agree within 1e-4 relative."""

from __future__ import annotations

import copy

import numpy as np
import torch

import ember

from ._api_core_helpers import assert_losses_close, copy_weights

CELLS, ACTIONS, HORIZON, EPISODES, UPDATES, GAMMA = 6, 3, 8, 4, 5, 0.9


class Corridor:
    """Positions 0..CELLS-1, start at 0; actions left / stay / right; reward 1 on reaching the end."""

    def __init__(self, batch: int):
        self.pos = np.zeros(batch, dtype=np.int64)

    def observe(self) -> np.ndarray:
        return np.eye(CELLS, dtype=np.float32)[self.pos]

    def step(self, actions: np.ndarray) -> np.ndarray:
        self.pos = np.clip(self.pos + actions - 1, 0, CELLS - 1)
        return (self.pos == CELLS - 1).astype(np.float32)


def build(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(CELLS, 16), nn.Tanh(), nn.Linear(16, ACTIONS))


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    out = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + GAMMA * running
        out[t] = running
    return out


def train(lib, policy, replay=None):
    """Returns (losses, actions taken); with ``replay`` the actions come from it instead of sampling."""
    Categorical = lib.distributions.Categorical
    opt = lib.optim.Adam(policy.parameters(), lr=3e-2)
    losses, taken = [], []
    for update in range(UPDATES):
        env = Corridor(EPISODES)
        log_probs, entropies, rewards, acts = [], [], [], []
        for t in range(HORIZON):
            dist = Categorical(logits=policy(lib.tensor(env.observe())))
            if replay is None:
                action = dist.sample()
            else:
                action = lib.tensor(replay[update][t])
                assert bool((dist.log_prob(action) > -30).all())
            acts.append(action.numpy().copy())
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            rewards.append(env.step(action.numpy()))
        ret = returns_to_go(np.stack(rewards))
        advantage = lib.tensor(ret - ret.mean())
        loss = -(lib.stack(log_probs) * advantage).sum(0).mean() - 0.01 * lib.stack(entropies).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        taken.append(acts)
    return losses, taken


def test_reinforce_matches_torch_on_the_same_trajectories():
    torch.manual_seed(0)
    ember.manual_seed(0)
    tp, ep = build(torch), build(ember)
    copy_weights(tp, ep)
    initial = copy.deepcopy(tp)
    ember_losses, actions = train(ember, ep)
    torch_losses, _ = train(torch, tp, replay=actions)
    assert_losses_close(ember_losses, torch_losses)
    # The actions come from Ember's seeded generator: a rerun from the same weights repeats them.
    ember.manual_seed(0)
    ep2 = build(ember)
    copy_weights(initial, ep2)
    _, again = train(ember, ep2)
    assert all((np.array(a) == np.array(b)).all() for a, b in zip(actions, again))
