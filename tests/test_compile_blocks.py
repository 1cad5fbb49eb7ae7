"""Offset-independent op blocks (``ember/compile/codegen/blocks.py``): each distinct block of a
program is one C function, so a model's identical layers and experts compile once; fused kernels
are deduplicated the same way. Results stay those of eager within the step tests' tolerance."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import ember
from bench import wl_train
from ember.backends import ckernels
from ember.compile.codegen import blocks

pytestmark = pytest.mark.skipif(
    ckernels.compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or os.environ.get("EMBER_STEP_PROGRAM") == "0"
    or os.environ.get("EMBER_PROGRAM") == "0",
    reason="whole-step programs need the C kernels and a compiler",
)


def test_blocks_differing_only_in_pointers_are_one_template():
    a = "    f(((float *)@B3@ + 0), ((float *)@B4@ + 512), ((char *)@Ss0@), 64);"
    b = "    f(((float *)@B9@ + 128), ((float *)@B2@ + 0), ((char *)@Ssk5_x@), 64);"
    c = "    f(((float *)@B9@ + 128), ((float *)@B2@ + 0), ((char *)@Ssk5_x@), 65);"  # another size
    (body_a, pa), (body_b, pb) = blocks.templatize(a), blocks.templatize(b)
    assert body_a == body_b == "    f(p0, p1, p2, 64);"
    assert pa == [("float", "B3", 0), ("float", "B4", 512), ("char", "Ss0", 0)]
    assert pb == [("float", "B9", 128), ("float", "B2", 0), ("char", "Ssk5_x", 0)]
    assert blocks.function(body_a, pa)[0] == blocks.function(body_b, pb)[0]
    assert blocks.function(*blocks.templatize(c))[0] != blocks.function(body_a, pa)[0]
    # the same pointer twice is one parameter; a pointer of a type without a size keeps its offset
    body, params = blocks.templatize("g(((float *)@B1@ + 4), ((float *)@B1@ + 4), ((foo_t *)@B2@ + 3));")
    assert body == "g(p0, p0, ((foo_t *)((char *)p1) + 3));" and len(params) == 2


def _moe_gpt(layers: int):
    ember.manual_seed(0)
    model = wl_train._gpt(ember, 65, layers, 2, 16, 8, (4, 2))  # tiny MoE-GPT: 4 experts, top 2
    opt = ember.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x, y = wl_train._token_batch(ember, 2, 8, 65)
    return wl_train._train_step(ember, model, opt, x, y, flat_logits=True), model


def _program(layers: int):
    step, model = _moe_gpt(layers)
    fn = ember.compile(step)
    for _ in range(3):
        fn()
    program = list(fn.cache.values())[-1].program
    assert program is not None and not program.spec.eager_nodes
    return program.spec, model


def test_identical_layers_and_experts_are_emitted_once():
    two, _ = _program(2)
    four, model = _program(4)

    def count(spec):
        src = spec.source
        calls = len(re.findall(r"\*/ \d+,", src))  # table entries: "/* %id = op */ index, n, args..."
        functions = re.findall(r"^int (ember_b\w+)\(", src, re.M)
        kernels = re.findall(r"^void (ember_kernel_\w+)\(", src, re.M)
        assert len(set(functions)) == len(functions) == len(spec.templates)  # each defined once
        assert len(set(kernels)) == len(kernels)
        return calls, len(functions), len(kernels)

    (calls2, fns2, k2), (calls4, fns4, k4) = count(two), count(four)
    assert calls4 > 1.8 * calls2  # twice the layers: about twice the calls ...
    assert (fns4, k4) == (fns2, k2)  # ... of the same functions and fused kernels
    assert fns4 < calls4 / 4

    # and the 4-layer program trains as eager does (the tolerance of test_compile_program's steps)
    eager_step, eager_model = _moe_gpt(4)
    for _ in range(3):
        eager_step()
    for (k, a), b in zip(eager_model.named_parameters(), model.parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


def test_the_step_graphs_of_one_function_share_one_arena():
    step, _model = _moe_gpt(1)
    fn = ember.compile(step)
    for _ in range(3):
        fn()
    entries = list(fn.cache.values()) + [e for es in fn.others.values() for e in es]
    programs = [e.program for e in entries]
    assert len(programs) == 2  # the first step's graph (it creates the optimizer state), the steady state's
    first, steady = sorted(programs, key=lambda p: p.arena.size)
    assert first.arena.size and first.arena.ctypes.data == steady.arena.ctypes.data  # one allocation
    other = ember.compile(_moe_gpt(1)[0])
    other()
    assert not np.shares_memory(list(other.cache.values())[0].program.arena, steady.arena)  # per function
