"""A bf16-autocast training run: Ember's losses within 2% of PyTorch's, same model, weights, data."""

from __future__ import annotations

import numpy as np
import torch

import ember
from bench.wl_train import _gpt


def _copy_weights(src_torch, dst_ember):
    sd = {k: ember.tensor(v.detach().numpy().copy()) for k, v in src_torch.state_dict().items()}
    dst_ember.load_state_dict(sd)


def _train(mod, model, x, y, steps, vocab):
    opt = mod.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    F = mod.nn.functional
    losses = []
    for _ in range(steps):
        with mod.autocast("cpu", dtype=mod.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        assert logits.dtype == mod.bfloat16 and loss.dtype == mod.float32
        opt.zero_grad()
        loss.backward()
        assert all(p.dtype == mod.float32 and p.grad.dtype == mod.float32 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    return losses


def test_bf16_autocast_gpt_losses_within_2_percent_of_torch():
    vocab, layers, heads, width, context, batch = 17, 2, 2, 32, 16, 4
    torch.manual_seed(0)
    tm = _gpt(torch, vocab, layers, heads, width, context)
    em = _gpt(ember, vocab, layers, heads, width, context)
    _copy_weights(tm, em)
    rng = np.random.default_rng(0)
    xa = rng.integers(0, vocab, (batch, context))
    ya = np.roll(xa, -1, axis=1)  # a learnable target: the next token
    tl = _train(torch, tm, torch.tensor(xa), torch.tensor(ya), 15, vocab)
    el = _train(ember, em, ember.tensor(xa), ember.tensor(ya), 15, vocab)
    assert tl[-1] < tl[0] * 0.9  # it trains
    np.testing.assert_allclose(el, tl, rtol=0.02)
