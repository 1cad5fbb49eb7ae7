"""ZeroRedundancyOptimizer stages 1 and 2 with real ranks: equal to unsharded Adam on the global batch."""

import re

import pytest

from tests.distributed._launch import launch


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_zero_matches_single_process(n):
    rc, out, _ = launch("zero.py", n=n, timeout=120)
    assert rc == 0, out
    for stage in (1, 2):
        assert len(re.findall(rf"rank \d: OK zero stage {stage} memory", out)) == n, out
        assert len(re.findall(rf"rank \d: OK zero stage {stage} load_state_dict", out)) == n, out
        assert f"rank 0: OK zero stage {stage} consolidated state_dict" in out
    assert len(re.findall(r"rank \d: OK zero stage 2 reduce-scatters \d+ buckets during backward", out)) == n, out


def test_setup_data_parallel_modes_agree():
    rc, out, _ = launch("training.py", n=2, timeout=120)
    assert rc == 0, out
    assert len(re.findall(r"rank \d: OK setup_data_parallel dp == zero == zero2", out)) == 2, out
