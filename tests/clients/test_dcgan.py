"""Client program: pytorch/examples' DCGAN (``dcgan/main.py``), a few alternating steps.

Generator (``ConvTranspose2d`` + ``BatchNorm2d`` + ``ReLU``, ``Tanh`` out) and discriminator
(``Conv2d`` + ``BatchNorm2d`` + ``LeakyReLU(0.2)``, ``Sigmoid`` out) are the example's, shrunk to
16x16 single-channel images; ``weights_init``, the two Adam optimizers (lr 2e-4, betas (0.5,
0.999)), ``BCELoss`` and the update order (D on real, D on detached fake, then G) follow the
example. The same initial weights, real images and noise go to Ember and PyTorch; every
``errD``/``errG`` must agree within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import torch

import ember

NZ, NGF, NDF, NC, BATCH, STEPS = 8, 8, 8, 1, 6, 4


def _models(lib):
    nn = lib.nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(NZ, NGF * 2, 4, 1, 0, bias=False),  # 1x1 -> 4x4
                nn.BatchNorm2d(NGF * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),  # -> 8x8
                nn.BatchNorm2d(NGF),
                nn.ReLU(True),
                nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),  # -> 16x16
                nn.Tanh(),
            )

        def forward(self, input):
            return self.main(input)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),  # 16x16 -> 8x8
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),  # -> 4x4
                nn.BatchNorm2d(NDF * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(NDF * 2, 1, 4, 1, 0, bias=False),  # -> 1x1
                nn.Sigmoid(),
            )

        def forward(self, input):
            return self.main(input).view(-1, 1).squeeze(1)

    return Generator(), Discriminator()


def _weights_init(lib, m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        lib.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        lib.nn.init.normal_(m.weight, 1.0, 0.02)
        lib.nn.init.zeros_(m.bias)


def _train(lib, g_weights, d_weights, reals, noises):
    netG, netD = _models(lib)
    netG.load_state_dict({k: lib.tensor(v) for k, v in g_weights.items()})
    netD.load_state_dict({k: lib.tensor(v) for k, v in d_weights.items()})
    criterion = lib.nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = lib.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = lib.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    out = []
    for real, noise in zip(reals, noises):
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = lib.tensor(real)
        label = lib.full((BATCH,), real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        fake = netG(lib.tensor(noise))
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        out += [errD.item(), errG.item()]
    return out, netG.main[1].running_mean.numpy().copy()


def test_dcgan_matches_torch():
    torch.manual_seed(0)
    netG, netD = _models(torch)
    netG.apply(lambda m: _weights_init(torch, m))
    netD.apply(lambda m: _weights_init(torch, m))
    g_weights = {k: v.detach().numpy().copy() for k, v in netG.state_dict().items()}
    d_weights = {k: v.detach().numpy().copy() for k, v in netD.state_dict().items()}
    rng = np.random.default_rng(0)
    reals = [np.tanh(rng.standard_normal((BATCH, NC, 16, 16))).astype(np.float32) for _ in range(STEPS)]
    noises = [rng.standard_normal((BATCH, NZ, 1, 1)).astype(np.float32) for _ in range(STEPS)]
    ours, ours_rm = _train(ember, g_weights, d_weights, reals, noises)
    theirs, theirs_rm = _train(torch, g_weights, d_weights, reals, noises)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    np.testing.assert_allclose(ours_rm, theirs_rm, rtol=1e-4, atol=1e-6)  # BatchNorm running stats too
