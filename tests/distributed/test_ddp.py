"""DistributedDataParallel with real ranks: equal to one process on the global batch."""

import re

import pytest

from tests.distributed._launch import launch


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_ddp_matches_single_process(n):
    rc, out, _ = launch("ddp.py", n=n, timeout=120)
    assert rc == 0, out
    for name in [
        "default buckets",
        "many small buckets",
        "gradient_as_bucket_view",
        "find_unused_parameters",
        "no_sync",
        "broadcast_buffers",
        "overlap trace",
    ]:
        assert len(re.findall(rf"rank \d: OK {name}", out)) == n, (name, out)


def test_ddp_importable_the_torch_way():
    import ember as torch
    from ember.nn.parallel import DistributedDataParallel

    assert torch.nn.parallel.DistributedDataParallel is DistributedDataParallel
