"""Client program: pytorch/examples' MNIST CNN trained with Adadelta and StepLR, on random data.

The model and the training loop are those of ``pytorch/examples/mnist/main.py`` written in the
ordinary PyTorch API; the same code runs with ``lib`` = ember and torch, from the same initial
weights and the same random 28x28 batches. Dropout is given p=0 so both frameworks compute the
same function (their random masks differ); everything else is as in the example. The losses
of every step must agree within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import torch

import ember

STEPS_PER_EPOCH, EPOCHS, BATCH = 2, 3, 8


def _net(lib):
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.0)
            self.dropout2 = nn.Dropout(0.0)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = lib.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = self.dropout2(x)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    return Net()


def _train(lib, weights, batches):
    F = lib.nn.functional
    model = _net(lib)
    model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    optimizer = lib.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = lib.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    losses = []
    for _ in range(EPOCHS):
        model.train()
        for data, target in batches:  # the same small dataset every epoch
            data, target = lib.tensor(data), lib.tensor(target)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    model.eval()
    with lib.no_grad():
        data, target = lib.tensor(batches[0][0]), lib.tensor(batches[0][1])
        test_loss = F.nll_loss(model(data), target, reduction="sum").item()
    return losses, test_loss, optimizer.param_groups[0]["lr"]


def test_mnist_cnn_adadelta_steplr_matches_torch():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    weights = {k: v.detach().numpy().copy() for k, v in _net(torch).state_dict().items()}
    batches = [
        (rng.normal(0.1307, 0.3081, (BATCH, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, BATCH))
        for _ in range(STEPS_PER_EPOCH)
    ]
    mine, mine_test, mine_lr = _train(ember, weights, batches)
    ref, ref_test, ref_lr = _train(torch, weights, batches)
    np.testing.assert_allclose(mine, ref, rtol=1e-4)
    np.testing.assert_allclose(mine_test, ref_test, rtol=1e-4)
    assert mine_lr == ref_lr
    assert ref_test / BATCH < ref[0]  # it learns the first batch
