"""Shared test fixtures: seeds, and PyTorch (the oracle) limited to the same threads as Ember."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    ember.manual_seed(0)
    torch.manual_seed(0)
    yield
