"""DataLoader faults: timeouts that raise on time, and worker results or errors that cannot be pickled."""

from __future__ import annotations

import threading
import time

import pytest

import ember.utils.data as edata
from ember.utils.data import get_worker_info


class _Stuck(edata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(0 if i == 0 else 30)  # a worker stuck in a slow read
        return i


def test_timeout_raises_at_the_timeout_not_after_the_join():
    loader = edata.DataLoader(_Stuck(), num_workers=2, timeout=1.0)
    it = iter(loader)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 1.0 seconds"):
        for _ in it:
            pass
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 2.5, elapsed  # was timeout + 5 s of joining the stuck worker
    assert not any(w.is_alive() for w in it._workers)


class _LocalErrorDataset(edata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        class LocalError(Exception):  # a class pickle cannot name: the error cannot be sent as itself
            pass

        raise LocalError(f"bad sample {i}")


class _UnpicklableSample(edata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {"lock": threading.Lock(), "i": i}


def _only_in_worker():
    if get_worker_info() is None:
        raise ValueError("this object cannot be rebuilt in the main process")
    return "ok"


class _FailsInParent:
    def __reduce__(self):
        return (_only_in_worker, ())


class _UnpicklableInParent(edata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return _FailsInParent()


def _collate_as_is(batch):
    return batch


@pytest.mark.parametrize(
    ("dataset", "error", "pattern"),
    [
        (_LocalErrorDataset(), RuntimeError, r"(?s)Caught LocalError.*bad sample 0.*could not be sent as itself"),
        (_UnpicklableSample(), RuntimeError, r"could not send its batch.*cannot be pickled.*lock"),
        (_UnpicklableInParent(), RuntimeError, r"could not be unpickled in the main process.*cannot be rebuilt"),
    ],
    ids=["unpicklable exception", "unpicklable batch", "batch failing in the parent"],
)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_unsendable_worker_results_are_reported_not_hung(dataset, error, pattern, context):
    # The loader's timeout only bounds the test if the fix regresses (it used to hang for ever).
    loader = edata.DataLoader(
        dataset, batch_size=1, num_workers=1, collate_fn=_collate_as_is, timeout=20, multiprocessing_context=context
    )
    start = time.monotonic()
    with pytest.raises(error, match=pattern):
        list(loader)
    assert time.monotonic() - start < 10
