"""Client program: pytorch/examples' VAE (``vae/main.py``), a few Adam steps on random data.

The model, the reparameterization and the loss (binary cross-entropy summed, plus the KL
divergence) are those of the example, written in the ordinary PyTorch API and run with ``lib`` =
ember and torch from the same initial weights. The example's ``torch.randn_like`` noise is
drawn once in NumPy and handed to both frameworks, so they compute the same function; sizes
are shrunk (784-400-20 becomes 64-32-4). The losses of every step must agree within 1e-4.
"""

from __future__ import annotations

import numpy as np
import torch

import ember

D_IN, HIDDEN, LATENT, BATCH, STEPS = 64, 32, 4, 16, 6


def _vae(lib, noise):
    nn, F = lib.nn, lib.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(D_IN, HIDDEN)
            self.fc21 = nn.Linear(HIDDEN, LATENT)
            self.fc22 = nn.Linear(HIDDEN, LATENT)
            self.fc3 = nn.Linear(LATENT, HIDDEN)
            self.fc4 = nn.Linear(HIDDEN, D_IN)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = lib.exp(0.5 * logvar)
            eps = lib.tensor(next(noise))  # the example's torch.randn_like(std), shared by both
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return lib.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, D_IN))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    return VAE()


def _loss_function(lib, recon_x, x, mu, logvar):
    bce = lib.nn.functional.binary_cross_entropy(recon_x, x.view(-1, D_IN), reduction="sum")
    kld = -0.5 * lib.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def _train(lib, weights, batches, eps):
    model = _vae(lib, iter(eps))
    model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for data in batches:
        data = lib.tensor(data)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = _loss_function(lib, recon_batch, data, mu, logvar)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() / len(data))
    model.eval()
    with lib.no_grad():
        recon, mu, logvar = model(lib.tensor(batches[0]))
        losses.append(_loss_function(lib, recon, lib.tensor(batches[0]), mu, logvar).item() / BATCH)
    return losses


def test_vae_matches_torch():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    weights = {k: v.detach().numpy().copy() for k, v in _vae(torch, iter(())).state_dict().items()}
    # Binarized "images" as in MNIST's [0, 1] pixels, and the reparameterization noise.
    batches = [(rng.random((BATCH, 1, 8, 8)) > 0.6).astype(np.float32) for _ in range(STEPS)]
    eps = [rng.standard_normal((BATCH, LATENT)).astype(np.float32) for _ in range(STEPS)]
    eps.append(eps[0])  # the final evaluation sees batch 0 with step 0's noise
    ours = _train(ember, weights, batches, eps)
    theirs = _train(torch, weights, batches, eps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert theirs[-1] < theirs[0]  # it trains: batch 0 scores better after the steps
