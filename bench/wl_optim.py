"""Optimizer-step workloads: one ``optimizer.step()`` over a GPT's parameter set.

The parameters have the shapes of nanoGPT's "baby GPT" (shakespeare-char: 6 layers, width 384,
context 256, vocabulary 65; 76 tensors, 10.7M parameters), each with a fixed gradient. Each case
times ``opt.step()`` alone, the same code on both frameworks, for one implementation:

- ``for-loop`` (``foreach=False``): one op per tensor per update term;
- ``foreach`` (``foreach=True``): one multi-tensor op per update term;
- ``fused`` (``fused=True``): one native call for the whole update.

Targets (ember / torch, same implementation): fused <= 1.0x, foreach and for-loop <= 1.5x.
The parameters drift with repeated steps; they stay finite (small lr), so times are steady.

Example:
    >>> import ember
    >>> step = adam_fused.impls["ember"](ember, tiny=True)
    >>> step()
"""

from __future__ import annotations

from bench.harness import workload

#: (layers, width, context, vocabulary) of the parameter set.
GPT = (6, 384, 256, 65)
TINY = (1, 16, 8, 11)


def gpt_shapes(layers: int, width: int, context: int, vocab: int) -> list[tuple[int, ...]]:
    """The parameter shapes of a nanoGPT model (weights tied: one embedding matrix)."""
    shapes = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,)]  # ln_1
        shapes += [(3 * width, width), (3 * width,), (width, width), (width,)]  # attention
        shapes += [(width,), (width,)]  # ln_2
        shapes += [(4 * width, width), (4 * width,), (width, 4 * width), (width,)]  # MLP
    return shapes + [(width,), (width,)]  # ln_f


def _params(torch, tiny: bool):
    """Parameters with gradients set (random, deterministic), as after a backward pass."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in gpt_shapes(*(TINY if tiny else GPT)):
        p = torch.randn(*shape, generator=gen).mul_(0.02).requires_grad_()
        p.grad = torch.randn(*shape, generator=gen).mul_(0.01)
        params.append(p)
    return params


IMPLS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
TARGETS = {"for-loop": 1.5, "foreach": 1.5, "fused": 1.0}


def _case(opt_name: str, kwargs: dict, impl: str):
    note = f"{opt_name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}), {impl}, 76 tensors, 10.7M params"

    @workload("optim", f"{opt_name} {impl}", target=TARGETS[impl], note=note)
    def case(torch, tiny: bool = False):
        params = _params(torch, tiny)
        opt = getattr(torch.optim, opt_name)(params, **kwargs, **IMPLS[impl])
        return opt.step

    return case


adam_forloop = _case("Adam", {"lr": 1e-4}, "for-loop")
adam_foreach = _case("Adam", {"lr": 1e-4}, "foreach")
adam_fused = _case("Adam", {"lr": 1e-4}, "fused")
adamw_fused = _case("AdamW", {"lr": 1e-4, "weight_decay": 0.1}, "fused")
sgd_forloop = _case("SGD", {"lr": 1e-4, "momentum": 0.9}, "for-loop")
sgd_foreach = _case("SGD", {"lr": 1e-4, "momentum": 0.9}, "foreach")
sgd_fused = _case("SGD", {"lr": 1e-4, "momentum": 0.9}, "fused")
