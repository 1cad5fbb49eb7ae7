"""DistributedSampler visits exactly PyTorch's indices on every rank, epoch, seed and option."""

import pytest
import torch
import torch.utils.data as tdata

import ember.utils.data as edata
from ember.utils.data.distributed import torch_randperm


@pytest.mark.parametrize("n, seed", [(1, 0), (2, 3), (10, 0), (97, 7), (1000, 123), (60000, 2**32 + 5)])
def test_randperm_is_torchs(n, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    assert torch_randperm(n, seed) == torch.randperm(n, generator=g).tolist()


@pytest.mark.parametrize("n", [10, 11, 13, 3])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_matches_torch(n, world, shuffle, drop_last):
    for rank in range(world):
        kw = dict(num_replicas=world, rank=rank, shuffle=shuffle, seed=5, drop_last=drop_last)
        e, t = edata.DistributedSampler(range(n), **kw), tdata.DistributedSampler(range(n), **kw)
        for epoch in (0, 1, 4):
            e.set_epoch(epoch)
            t.set_epoch(epoch)
            assert list(e) == list(t) and len(e) == len(t), (rank, epoch)


def test_bad_rank():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        edata.DistributedSampler(range(4), num_replicas=2, rank=2)
