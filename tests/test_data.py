"""ember.utils.data against torch.utils.data: datasets, samplers, collation, DataLoader (with workers)."""

from __future__ import annotations

import collections
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
import torch.utils.data as tdata

import ember
import ember.utils.data as edata


def _plain(x):
    """Batches of either library as nested Python lists/dicts, with dtype names, for comparison."""
    if isinstance(x, (ember.Tensor, torch.Tensor)):
        return ("tensor", str(x.dtype).split(".")[-1], x.tolist())
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x).__name__, [_plain(v) for v in x]
    return x


def _both(make_dataset, **kwargs):
    """Iterate an Ember and a torch DataLoader over equivalent datasets; return both as plain lists."""
    e = [_plain(b) for b in edata.DataLoader(make_dataset(ember), **kwargs)]
    t = [_plain(b) for b in tdata.DataLoader(make_dataset(torch), **kwargs)]
    return e, t


def _tensor_ds(lib, n=10):
    x = lib.arange(n * 2, dtype=lib.float32).reshape(n, 2)
    return (edata if lib is ember else tdata).TensorDataset(x, lib.arange(n))


# ----------------------------------------------------------------------------------- datasets
def test_tensor_dataset_subset_concat_match_torch():
    for lib, mod in ((ember, edata), (torch, tdata)):
        ds = _tensor_ds(lib)
        assert len(ds) == 10
        sub = mod.Subset(ds, [3, 1, 4])
        cat = mod.ConcatDataset([sub, mod.Subset(ds, [9])])
        assert len(cat) == 4
        assert cat[-1][1].item() == 9 and cat[2][1].item() == 4 and cat[0][0].tolist() == [6.0, 7.0]
        with pytest.raises(ValueError, match="absolute value of index"):
            cat[-5]
    with pytest.raises(AssertionError, match="Size mismatch"):
        edata.TensorDataset(ember.zeros(3), ember.zeros(4))
    with pytest.raises(AssertionError, match="empty"):
        edata.ConcatDataset([])
    with pytest.raises(IndexError):
        edata.ConcatDataset([[1, 2]])[2]


def test_dataset_add_and_stack_dataset():
    class Sq(edata.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return i * i

    both = Sq() + Sq()
    assert isinstance(both, edata.ConcatDataset) and [both[i] for i in range(6)] == [0, 1, 4, 0, 1, 4]
    assert edata.StackDataset([1, 2], [3, 4])[1] == tdata.StackDataset([1, 2], [3, 4])[1] == (2, 4)
    assert edata.StackDataset(a=[1, 2], b=[3, 4])[0] == {"a": 1, "b": 3}
    with pytest.raises(ValueError):
        edata.StackDataset([1, 2], [3])


def test_random_split_lengths_fractions_and_seed():
    parts = edata.random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(list(parts[0]) + list(parts[1])) == list(range(10))
    again = edata.random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(1))
    assert list(again[0]) == list(parts[0])
    other = edata.random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(2))
    assert list(other[0]) + list(other[1]) != list(parts[0]) + list(parts[1])
    # Fractions: floor, then the remainder dealt round-robin, as torch does.
    for fracs in ([0.5, 0.5], [0.3, 0.3, 0.4], [0.34, 0.33, 0.33], [0.1, 0.9]):
        e = [len(p) for p in edata.random_split(range(11), fracs)]
        t = [len(p) for p in tdata.random_split(range(11), fracs)]
        assert e == t, fracs
    ember.manual_seed(5)
    a = list(edata.random_split(range(8), [4, 4])[0])
    ember.manual_seed(5)
    assert list(edata.random_split(range(8), [4, 4])[0]) == a
    with pytest.raises(ValueError, match="Sum of input lengths"):
        edata.random_split(range(10), [3, 3])
    with pytest.raises(ValueError, match="Sum of input lengths"):
        tdata.random_split(range(10), [3, 3])


# ----------------------------------------------------------------------------------- samplers
def test_samplers_basic():
    assert list(edata.SequentialSampler("abcd")) == [0, 1, 2, 3]
    assert list(edata.BatchSampler(range(7), 3, False)) == list(tdata.BatchSampler(range(7), 3, False))
    assert list(edata.BatchSampler(range(7), 3, True)) == list(tdata.BatchSampler(range(7), 3, True))
    assert len(edata.BatchSampler(range(7), 3, False)) == 3 and len(edata.BatchSampler(range(7), 3, True)) == 2
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="batch_size should be a positive integer"):
            edata.BatchSampler(range(3), bad, False)
    with pytest.raises(ValueError, match="drop_last"):
        edata.BatchSampler(range(3), 2, 1)
    with pytest.raises(ValueError, match="num_samples"):
        edata.RandomSampler(range(3), num_samples=0)
    with pytest.raises(TypeError, match="replacement"):
        edata.RandomSampler(range(3), replacement=1)


def test_random_sampler_seeding():
    g = ember.Generator().manual_seed(3)
    first = list(edata.RandomSampler(range(20), generator=g))
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert list(edata.RandomSampler(range(20), generator=ember.Generator().manual_seed(3))) == first
    # Without a generator: a new order every epoch, the same sequence after the same manual_seed.
    s = edata.RandomSampler(range(20))
    ember.manual_seed(0)
    e1, e2 = list(s), list(s)
    ember.manual_seed(0)
    assert list(s) == e1 and list(s) == e2 and e1 != e2
    # num_samples larger than the dataset: whole permutations, then a partial one.
    long = list(edata.RandomSampler(range(5), num_samples=12))
    assert len(long) == 12 and sorted(long[:5]) == list(range(5)) and sorted(long[5:10]) == list(range(5))
    rep = list(edata.RandomSampler(range(5), replacement=True, num_samples=100))
    assert len(rep) == 100 and set(rep) <= set(range(5))
    sub = list(edata.SubsetRandomSampler([10, 20, 30], generator=ember.Generator().manual_seed(0)))
    assert sorted(sub) == [10, 20, 30]
    w = list(edata.WeightedRandomSampler([0.0, 1.0, 0.0, 1.0], 50))
    assert set(w) <= {1, 3} and len(w) == 50
    assert sorted(edata.WeightedRandomSampler([1.0, 1.0, 1.0], 3, replacement=False)) == [0, 1, 2]


def test_distributed_sampler_matches_torch_without_shuffle():
    for n, world, drop in ((10, 3, False), (10, 3, True), (4, 4, False), (5, 2, False)):
        for rank in range(world):
            e = edata.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop)
            t = tdata.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop)
            assert list(e) == list(t) and len(e) == len(t), (n, world, drop, rank)
    # Shuffled: the ranks partition the same permutation, and set_epoch changes it.
    parts = [list(edata.DistributedSampler(range(12), num_replicas=3, rank=r, seed=7)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(12))
    s = edata.DistributedSampler(range(12), num_replicas=3, rank=0, seed=7)
    s.set_epoch(1)
    assert list(s) != parts[0]
    with pytest.raises(ValueError, match="Invalid rank"):
        edata.DistributedSampler(range(4), num_replicas=2, rank=2)


# ----------------------------------------------------------------------------------- collate
def test_default_collate_matches_torch():
    Point = collections.namedtuple("Point", "x y")
    cases = [
        lambda lib: [lib.tensor([1.0, 2.0]), lib.tensor([3.0, 4.0])],
        lambda lib: [1.5, 2.5],
        lambda lib: [1, 2, 3],
        lambda lib: [True, False],
        lambda lib: ["a", "b"],
        lambda lib: [np.array([1, 2], dtype=np.int16), np.array([3, 4], dtype=np.int16)],
        lambda lib: [np.float32(1.0), np.float32(2.0)],
        lambda lib: [(lib.zeros(2), 1), (lib.ones(2), 2)],
        lambda lib: [{"img": lib.zeros(1, 2), "label": 3}, {"img": lib.ones(1, 2), "label": 4}],
        lambda lib: [[1, 2.0], [3, 4.0]],
        lambda lib: [Point(1, 2.0), Point(3, 4.0)],
        lambda lib: [collections.OrderedDict(a=1, b=[lib.tensor(1), lib.tensor(2)])] * 2,
    ]
    for make in cases:
        e = edata.default_collate(make(ember))
        t = tdata.default_collate(make(torch))
        assert _plain(e) == _plain(t), make(torch)
        assert type(e).__name__ == type(t).__name__
    with pytest.raises(RuntimeError, match="equal size"):
        edata.default_collate([ember.zeros(2), ember.zeros(3)])
    with pytest.raises(RuntimeError, match="equal size"):
        edata.default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate"):
        edata.default_collate([object(), object()])
    with pytest.raises(TypeError, match="default_collate"):
        edata.default_collate([np.array(["a"]), np.array(["b"])])


def test_default_convert_matches_torch():
    for data in ({"x": np.array([1, 2])}, (np.float64(3.0), "s"), [np.zeros((2, 2), np.float32)], 5):
        assert _plain(edata.default_convert(data)) == _plain(tdata.default_convert(data))


# ----------------------------------------------------------------------------------- DataLoader
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"batch_size": 3},
        {"batch_size": 3, "drop_last": True},
        {"batch_size": 4, "collate_fn": lambda b: len(b)},
        {"batch_size": None},
        {"batch_sampler": [[0, 5], [2, 3, 4], [9]]},
        {"sampler": [9, 8, 7, 1], "batch_size": 2},
    ],
)
def test_dataloader_matches_torch(kwargs):
    e, t = _both(_tensor_ds, **kwargs)
    assert e == t
    assert len(edata.DataLoader(_tensor_ds(ember), **kwargs)) == len(tdata.DataLoader(_tensor_ds(torch), **kwargs))


def test_dataloader_argument_errors_match_torch():
    bad = [
        {"num_workers": -1},
        {"timeout": -1},
        {"prefetch_factor": 2},
        {"persistent_workers": True},
        {"sampler": [0, 1], "shuffle": True},
        {"batch_sampler": [[0]], "batch_size": 2},
        {"batch_sampler": [[0]], "drop_last": True},
        {"batch_size": None, "drop_last": True},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError) as te:
            tdata.DataLoader(_tensor_ds(torch), **kwargs)
        with pytest.raises(ValueError) as ee:
            edata.DataLoader(_tensor_ds(ember), **kwargs)
        assert str(ee.value).split()[:2] == str(te.value).split()[:2], kwargs
    loader = edata.DataLoader(_tensor_ds(ember), batch_size=2)
    with pytest.raises(ValueError, match="should not be set after"):
        loader.batch_size = 3
    loader.num_workers = 0  # not frozen in torch either


class _CountBase:
    """0..n-1, shared between workers by stride (the torch-doc way)."""

    lib = edata

    def __init__(self, n=10):
        self.n = n

    def __iter__(self):
        info = self.lib.get_worker_info()
        if info is None:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))

    def __len__(self):
        return self.n


class Count(_CountBase, edata.IterableDataset):
    lib = edata


class TCount(_CountBase, tdata.IterableDataset):
    lib = tdata


def test_iterable_dataset_matches_torch():
    for kwargs in ({"batch_size": 3}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}):
        e = [_plain(b) for b in edata.DataLoader(Count(), **kwargs)]
        t = [_plain(b) for b in tdata.DataLoader(TCount(), **kwargs)]
        assert e == t
        assert len(edata.DataLoader(Count(), **kwargs)) == len(tdata.DataLoader(TCount(), **kwargs))
    with pytest.raises(ValueError, match="expected unspecified shuffle"):
        edata.DataLoader(Count(), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified sampler"):
        edata.DataLoader(Count(), sampler=[0])
    assert list(edata.ChainDataset([Count(2), Count(3)])) == [0, 1, 0, 1, 2]


def test_shuffle_reproducible_from_manual_seed_and_generator():
    def epochs(**kw):
        loader = edata.DataLoader(_tensor_ds(ember, 12), batch_size=5, shuffle=True, **kw)
        return [[y.tolist() for _, y in loader] for _ in range(2)]

    ember.manual_seed(1)
    a = epochs()
    ember.manual_seed(1)
    assert epochs() == a
    assert a[0] != a[1] and sorted(sum(a[0], [])) == list(range(12))
    b = epochs(generator=ember.Generator().manual_seed(9))
    assert b == epochs(generator=ember.Generator().manual_seed(9))


# ----------------------------------------------------------------------------------- workers
def _children():
    return {p.pid for p in multiprocessing.active_children()}


def test_workers_same_order_as_single_process():
    before = _children()
    for kw in ({"batch_size": 3, "shuffle": True}, {"batch_size": 4, "drop_last": True, "shuffle": True}):
        ember.manual_seed(4)
        single = [[_plain(b) for b in edata.DataLoader(_tensor_ds(ember, 23), **kw)] for _ in range(2)]
        ember.manual_seed(4)
        multi = [
            [_plain(b) for b in edata.DataLoader(_tensor_ds(ember, 23), num_workers=2, prefetch_factor=3, **kw)]
            for _ in range(2)
        ]
        assert multi == single
    # Workers send tensors as arrays: dtypes and nested structures survive the trip.
    e = [_plain(b) for b in edata.DataLoader(_DictDs(), batch_size=2, num_workers=2)]
    assert e == [_plain(b) for b in tdata.DataLoader(_DictDs(torch), batch_size=2)]
    assert _children() == before  # exhausted iterators shut their workers down


class _DictDs(edata.Dataset):
    def __init__(self, lib=ember):
        self.lib = lib

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": self.lib.full((2,), i, dtype=self.lib.float16), "pair": (i, np.int8(i)), "name": f"n{i}"}


def test_iterable_dataset_with_workers_matches_torch():
    kw = {"batch_size": 2, "num_workers": 2}
    e = [_plain(b) for b in edata.DataLoader(Count(7), **kw)]
    t = [_plain(b) for b in tdata.DataLoader(TCount(7), **kw)]
    assert e == t


class _WhoAmI(edata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = edata.get_worker_info()
        return np.array(
            [info.id, info.seed, os.getpid(), int(ember.randint(0, 2**30, (1,)).item()), _INIT.get("x", -1)]
        )


_INIT = {}


def _init_fn(worker_id):
    _INIT["x"] = 100 + worker_id


def test_worker_info_seeds_and_init_fn():
    rows = [b[0].tolist() for b in edata.DataLoader(_WhoAmI(), num_workers=2, worker_init_fn=_init_fn)]
    ids = [r[0] for r in rows]
    assert ids == [0, 1, 0, 1]  # batches go to workers round-robin
    assert rows[0][1] + 1 == rows[1][1]  # seeds are base_seed + worker_id
    assert rows[0][2] != rows[1][2] != os.getpid()
    assert rows[0][3] != rows[1][3]  # differently seeded global generators
    assert [r[4] for r in rows] == [100, 101, 100, 101]
    assert edata.get_worker_info() is None


class _Failing(edata.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise ValueError(f"bad sample {i}")
        return i


def test_worker_exception_is_reraised_with_traceback_and_workers_stop():
    before = _children()
    it = iter(edata.DataLoader(_Failing(), batch_size=2, num_workers=2))
    assert next(it).tolist() == [0, 1] and next(it).tolist() == [2, 3]
    with pytest.raises(ValueError, match="(?s)Caught ValueError in DataLoader worker process 0.*bad sample 5"):
        next(it)
    assert _children() == before
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(KeyError, match="Traceback"):
        list(edata.DataLoader(_KeyErr(), num_workers=1))


class _KeyErr(edata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {}["missing"]


class _Dies(edata.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 3:
            os._exit(7)
        return i


def test_worker_death_raises_instead_of_hanging():
    before = _children()
    with pytest.raises(RuntimeError, match="exited unexpectedly.*exit code 7"):
        list(edata.DataLoader(_Dies(), num_workers=2))
    assert _children() == before


class _Slow(edata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        time.sleep(1.0 if i == 1 else 0)
        return i


def test_timeout_raises():
    with pytest.raises(RuntimeError, match="timed out after 0.2 seconds"):
        list(edata.DataLoader(_Slow(), num_workers=1, timeout=0.2))


def test_del_and_break_shut_workers_down():
    before = _children()
    loader = edata.DataLoader(_tensor_ds(ember, 40), batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    assert len(_children() - before) == 2
    del it  # a half-consumed iterator going away must not leave processes behind
    assert _children() == before
    for _ in loader:
        break
    assert _children() == before


def test_persistent_workers_reuse_processes_across_epochs():
    before = _children()
    loader = edata.DataLoader(_tensor_ds(ember, 9), batch_size=2, num_workers=2, persistent_workers=True)
    first = [_plain(b) for b in loader]
    pids = _children() - before
    assert len(pids) == 2
    it = iter(loader)
    next(it)  # an unfinished epoch: its in-flight batches must not leak into the next one
    assert [_plain(b) for b in loader] == first
    assert _children() - before == pids
    assert [_plain(b) for b in edata.DataLoader(Count(5), batch_size=2, num_workers=2, persistent_workers=True)] == [
        _plain(b) for b in tdata.DataLoader(TCount(5), batch_size=2, num_workers=2)
    ]
    del loader, it
    assert _children() == before


def test_spawn_context_works():
    loader = edata.DataLoader(_tensor_ds(ember, 4), batch_size=2, num_workers=1, multiprocessing_context="spawn")
    assert [y.tolist() for _, y in loader] == [[0, 1], [2, 3]]
