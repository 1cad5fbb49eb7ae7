"""The warm cache of compiled training steps (ember/compile/step_cache.py): a step whose graph a
previous compile (or process) optimized and rendered loads that work, binds it to its own tensors,
and trains exactly as the compile that stored it and within float tolerance of eager."""

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
from ember.compile import step_cache
from ember.compile.step_fusion import fuse_step as _real_fuse_step
from tests.test_compile_step import _WORKLOADS

pytestmark = pytest.mark.skipif(
    os.environ.get("EMBER_CKERNELS") == "0", reason="needs the C kernels and compiler (EMBER_CKERNELS=0)"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The step cache on, over a folder of its own; counts the compiles that ran the passes."""
    monkeypatch.setenv("EMBER_STEP_CACHE", "1")
    monkeypatch.setenv("EMBER_STEP_CACHE_DIR", str(tmp_path / "steps"))
    runs = []

    def counting(entry, log=None):
        runs.append(entry)
        return _real_fuse_step(entry, log)

    monkeypatch.setattr(importlib.import_module("ember.compile.step"), "fuse_step", counting)
    return tmp_path / "steps", runs


def _train(name, steps, seed=0, lr_scale=1.0, compiled=True, batches=None):
    make_model, make_batch, loss_fn = _WORKLOADS[name]
    ember.manual_seed(seed)
    model = make_model()
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2 * lr_scale)
    batches = batches or [make_batch() for _ in range(steps)]

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        return loss

    run = ember.compile(step) if compiled else step
    losses = [float(run(x, y)) for x, y in batches]
    return losses, [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(_WORKLOADS))
def test_a_second_compile_loads_the_step_and_trains_alike(name, cache):
    folder, runs = cache
    first, p1 = _train(name, 6)
    stored = len(runs)
    assert stored >= 1 and len(list(folder.glob("*.pkl"))) == stored  # each step graph stored
    second, p2 = _train(name, 6)
    assert len(runs) == stored  # no passes ran: every graph came from the cache
    assert second == first  # the same program over the same values: bit for bit
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
    # (parameters are not compared with eager: AdamW turns the rounding noise of a gradient that
    # should be zero, GPT's key bias, into steps of size lr; test_compile_step.py says more)
    eager, _ = _train(name, 6, compiled=False)
    np.testing.assert_allclose(second, eager, rtol=1e-4)


def test_a_loaded_step_binds_this_processes_tensors(cache):
    """Other parameter values and batches, the same graph: the loaded program reads them, not
    the values the storing compile saw."""
    folder, runs = cache
    _train("mlp", 3, seed=0)
    stored = len(runs)
    got, pc = _train("mlp", 5, seed=7)
    assert len(runs) == stored
    want, pe = _train("mlp", 5, seed=7, compiled=False)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(pc, pe):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_different_learning_rate_or_shape_is_another_entry(cache):
    folder, runs = cache
    _train("mlp", 2)
    n = len(runs)
    _train("mlp", 2, lr_scale=0.5)  # lr is a parameter of the update ops: other graphs
    assert len(runs) == 2 * n
    _train("mlp", 1, batches=[(ember.randn(9, 12), ember.randint(0, 3, (9,)))])  # another batch size
    assert len(runs) == 2 * n + 1  # (one step: the first step's graph only)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_entry_is_compiled_and_stored_again(cache, damage):
    folder, runs = cache
    want, _ = _train("gpt", 3)
    n = len(runs)
    for f in folder.glob("*.pkl"):
        data = f.read_bytes()
        f.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(256), "empty": b""}[damage])
    got, _ = _train("gpt", 3)
    assert got == want
    assert len(runs) == 2 * n  # compiled again
    again, _ = _train("gpt", 3)  # and stored again: the next compile loads it
    assert again == want and len(runs) == 2 * n


def test_off_with_the_switch_or_with_compile_logs(cache, monkeypatch):
    folder, runs = cache
    monkeypatch.setenv("EMBER_STEP_CACHE", "0")
    _train("mlp", 2)
    assert not folder.exists() or not list(folder.glob("*.pkl"))
    monkeypatch.setenv("EMBER_STEP_CACHE", "1")
    _train("mlp", 2)
    n = len(runs)
    monkeypatch.setenv("EMBER_LOGS", "graph")
    _train("mlp", 2)
    assert len(runs) > n  # every pass ran (and printed), though an entry was there


def test_the_key_states_parameters_exactly_or_refuses_them():
    key = step_cache._Key()
    plain = (1, 2.5, "a", None, slice(0, 3), ember.float32, [True])
    assert key.value(plain) == key.value(plain)
    assert key.value(0.1) != key.value(np.nextafter(0.1, 1.0).item())  # floats by every bit
    with pytest.raises(step_cache.Uncacheable):
        key.value(object())
    a = np.arange(4.0)
    assert key.value(a) != key.value(a + 1)


_CHILD = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("ignore")
    import ember
    import importlib
    from bench import wl_train
    step = importlib.import_module("ember.compile.step")
    runs = []
    real = step.fuse_step
    step.fuse_step = lambda entry, log=None: runs.append(1) or real(entry, log)
    ember.manual_seed(0)
    train = wl_train.moe_gpt.impls["ember"](ember, tiny=True)
    fn = ember.compile(train)
    for _ in range(4):
        fn()
    model = dict(zip(train.__code__.co_freevars, [c.cell_contents for c in train.__closure__]))["model"]
    print(len(runs), *[repr(float(p.double().sum())) for p in model.parameters()])
    """
)


def test_a_new_process_loads_what_another_stored(tmp_path):
    env = dict(os.environ, EMBER_STEP_CACHE="1", EMBER_STEP_CACHE_DIR=str(tmp_path), PYTHONPATH=os.getcwd())

    def child():
        r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout.split()

    first, second = child(), child()
    assert int(first[0]) == 2 and int(second[0]) == 0  # two step graphs: first step, steady state
    assert first[1:] == second[1:]


def test_a_folder_that_cannot_be_written_only_costs_the_cache(cache, monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("EMBER_STEP_CACHE_DIR", str(blocked / "steps"))
    want, _ = _train("mlp", 3, compiled=False)
    got, _ = _train("mlp", 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    got, _ = _train("mlp", 3)  # compiled again (nothing was stored), the same again
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_least_recently_used_entries_are_evicted(cache, monkeypatch):
    folder, runs = cache
    monkeypatch.setattr(step_cache, "MAX_ENTRIES", 2)
    _train("mlp", 2)  # two graphs: the first step's and the steady state's
    kept = sorted(folder.glob("*.pkl"))
    assert len(kept) == 2
    _train("mlp", 2)  # hits: each touches its entry
    _train("mlp", 1, lr_scale=0.5)  # a third graph: the oldest entry goes
    left = sorted(folder.glob("*.pkl"))
    assert len(left) == 2 and len(set(left) & set(kept)) == 1
