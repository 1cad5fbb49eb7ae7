"""Whole-step programs compiled in chunks (``ember/compile/codegen/chunked.py``): the same results
as the program built as one unit, chunks found in the cache (also across the two step graphs),
a corrupt cached chunk rebuilt, and a failed chunk build falling back to the one-unit build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
from bench import wl_train
from ember.backends import ckernels
from ember.compile.codegen import chunked

pytestmark = pytest.mark.skipif(
    ckernels.compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or os.environ.get("EMBER_STEP_PROGRAM") == "0"
    or os.environ.get("EMBER_PROGRAM") == "0",
    reason="whole-step programs need the C kernels and a compiler",
)


def _params_after(steps: int, *, compiled: bool = True):
    """The tiny GPT's parameters after ``steps`` training steps, and the compiled step."""
    ember.manual_seed(0)
    step = wl_train.gpt.impls["ember"](ember, tiny=True)
    model = dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))["model"]
    fn = ember.compile(step) if compiled else step
    for _ in range(steps):
        fn()
    return [p.detach().numpy().copy() for p in model.parameters()], fn


@pytest.fixture
def small_chunks(monkeypatch, tmp_path):
    """Every program chunked, in small pieces, into a fresh cache; counts compiler runs by name."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(chunked, "MIN_BYTES", 0)
    monkeypatch.setattr(chunked, "_SOFT", 1500)
    monkeypatch.setattr(chunked, "_HARD", 4000)
    runs = {"compiled": 0, "chunk": 0}
    real = ckernels._compile

    def counting(src, name, cc, flag_sets, target):
        if name in runs:
            runs[name] += 1
        return real(src, name, cc, flag_sets, target)

    monkeypatch.setattr(ckernels, "_compile", counting)
    return runs


def test_chunked_program_gives_the_one_unit_programs_results(small_chunks, monkeypatch):
    got, fn = _params_after(3)
    entry = list(fn.cache.values())[-1]
    assert entry.program is not None and not entry.program.spec.eager_nodes
    assert small_chunks["chunk"] >= 4  # really built in pieces
    monkeypatch.setenv("EMBER_PROGRAM_CHUNKS", "0")
    before = small_chunks["chunk"]
    want, _ = _params_after(3)
    assert small_chunks["chunk"] == before  # the reference really is one unit
    for a, b in zip(got, want):  # the same blocks in the same order: the same arithmetic
        np.testing.assert_array_equal(a, b)
    eager, _ = _params_after(3, compiled=False)
    for a, b in zip(got, eager):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)  # as test_compile_step: Adam on GPT


def test_chunks_come_from_the_cache_and_are_shared_between_step_graphs(small_chunks, monkeypatch):
    named = []  # each program's chunk names (split runs once per step graph)
    real = chunked.split

    def spy(*a):
        out = real(*a)
        named.append({c.name for c in out[1]})
        return out

    monkeypatch.setattr(chunked, "split", spy)
    _params_after(2)  # the first step's graph, then the steady state's
    assert len(named) == 2
    assert named[0] & named[1]  # ops the two graphs share compile once
    first = small_chunks["chunk"]
    assert first == len(named[0] | named[1]) == len(list(Path(os.environ["EMBER_CACHE_DIR"]).glob("chunk-*.so")))
    _params_after(2)  # a new compile of the same step: every chunk is in the cache
    assert small_chunks["chunk"] == first


def test_split_names_only_what_a_chunk_calls():
    from ember.compile.codegen import blocks

    name, body = blocks.function(
        *blocks.templatize("ember_kernel_ab3(((float *)@B1@ + 0), ((float *)@B2@ + 8), 4, 1, 4);")
    )
    protos = {"ember_kernel_ab3": "const float * in0, float * out0, int64_t n, int64_t rows, int64_t cols"}
    c = chunked._chunk("ember_cx", body, protos, "int64_t", ["layer_norm_fwd_f32"])
    assert c.table == ["sgemm", "dgemm", "ember_kernel_ab3"]
    assert "immintrin" not in c.source and f"int {name}(void **P, const int64_t *ember_a)" in c.source


def test_failed_chunk_build_falls_back_to_one_unit(small_chunks, monkeypatch):
    real = ckernels.load
    monkeypatch.setattr(
        ckernels, "load", lambda src, name, sigs, *a, **k: None if name == "chunk" else real(src, name, sigs, *a, **k)
    )
    got, fn = _params_after(2)
    assert list(fn.cache.values())[-1].program is not None
    eager, _ = _params_after(2, compiled=False)
    for a, b in zip(got, eager):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)  # as test_compile_step: Adam on GPT


_RUN = """
import ember
from ember.compile.codegen import chunked
from tests.test_compile_chunked import _params_after
chunked.MIN_BYTES, chunked._SOFT, chunked._HARD = 0, 1500, 4000
print(sum(float(abs(p).sum()) for p in _params_after(2)[0]))
"""


def test_corrupt_cached_chunk_is_rebuilt(tmp_path):
    env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[1]))

    def run():
        return subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0, first.stderr
    so = sorted(tmp_path.glob("chunk-*.so"))
    assert so
    for p in so[:3]:
        p.write_bytes(b"not a library")
    second = run()  # a new process: the corrupt entries fail to load, are removed and rebuilt
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == first.stdout.split()[-1]
    assert all(p.stat().st_size > 100 for p in so[:3])
