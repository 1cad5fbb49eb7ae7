"""Op-level workloads, forward + backward, at the shapes the training workloads use.

Written once in the PyTorch API (``torch`` is ``ember`` or ``torch``). A fwd+bwd case runs the op,
then ``out.backward(g)`` with a fixed upstream gradient ``g`` (no extra loss op in the timing), and
clears the input gradients first so that no case pays for accumulation. Targets (ember/torch):
conv2d fwd+bwd <= 1.5x, softmax and layer_norm fwd+bwd <= 1.5x; the rest is reported only.
Forward-only rows (report only) show which half a miss comes from.

``tiny=True`` shrinks the shapes (for the tests).

Example:
    >>> import ember
    >>> step = conv2d_fb(ember, tiny=True)
    >>> step()
"""

from __future__ import annotations

from bench.harness import workload

OP_TARGET = 1.5


def _fwd_bwd(torch, fn, inputs):
    """step(): clear the inputs' grads, ``out = fn(*inputs)``, ``out.backward(g)``."""
    g = torch.randn(*fn(*inputs).shape)

    def step():
        for t in inputs:
            t.grad = None
        fn(*inputs).backward(g)

    return step


def _fwd(torch, fn, inputs):
    def step():
        with torch.no_grad():
            fn(*inputs)

    return step


def _leaf(torch, *shape):
    return torch.randn(*shape, requires_grad=True)


# --------------------------------------------------------------------------- conv2d
def _conv(torch, tiny):
    F = torch.nn.functional
    x = _leaf(torch, *((2, 4, 8, 8) if tiny else (32, 16, 28, 28)))
    w = _leaf(torch, *((4, 4, 3, 3) if tiny else (16, 16, 3, 3)))
    return (lambda x, w: F.conv2d(x, w, padding=1)), (x, w)


@workload("ops", "conv2d 3x3 16->16 (32,16,28,28) fwd+bwd", target=OP_TARGET)
def conv2d_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_conv(torch, tiny))


@workload("ops", "conv2d 3x3 16->16 (32,16,28,28) fwd")
def conv2d_f(torch, tiny: bool = False):
    return _fwd(torch, *_conv(torch, tiny))


# --------------------------------------------------------------------------- softmax, layer_norm
def _rows(tiny):
    return (16, 8) if tiny else (64 * 64, 128)


def _softmax(torch, tiny):
    F = torch.nn.functional
    return (lambda x: F.softmax(x, dim=-1)), (_leaf(torch, *_rows(tiny)),)


def _layer_norm(torch, tiny):
    F = torch.nn.functional
    n = _rows(tiny)[1]
    x, w, b = _leaf(torch, *_rows(tiny)), _leaf(torch, n), _leaf(torch, n)
    return (lambda x, w, b: F.layer_norm(x, (n,), w, b)), (x, w, b)


@workload("ops", "softmax (4096,128) dim=-1 fwd+bwd", target=OP_TARGET)
def softmax_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_softmax(torch, tiny))


@workload("ops", "softmax (4096,128) dim=-1 fwd")
def softmax_f(torch, tiny: bool = False):
    return _fwd(torch, *_softmax(torch, tiny))


@workload("ops", "layer_norm (4096,128) affine fwd+bwd", target=OP_TARGET)
def layer_norm_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_layer_norm(torch, tiny))


@workload("ops", "layer_norm (4096,128) affine fwd")
def layer_norm_f(torch, tiny: bool = False):
    return _fwd(torch, *_layer_norm(torch, tiny))


# --------------------------------------------------------------------------- attention
def _attention(torch, tiny):
    F = torch.nn.functional
    shape = (2, 2, 8, 4) if tiny else (16, 4, 64, 32)
    q, k, v = (_leaf(torch, *shape) for _ in range(3))
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), (q, k, v)


@workload("ops", "sdpa causal (16,4,64,32) fwd+bwd")
def attention_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_attention(torch, tiny))


@workload("ops", "sdpa causal (16,4,64,32) fwd")
def attention_f(torch, tiny: bool = False):
    return _fwd(torch, *_attention(torch, tiny))


# --------------------------------------------------------------------------- reductions
def _reduce(torch, tiny, op):
    x = _leaf(torch, *((8, 16) if tiny else (256, 1024)))
    return (lambda x: getattr(x, op)(dim=1)), (x,)


@workload("ops", "sum(dim=1) (256,1024) fwd+bwd")
def sum_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_reduce(torch, tiny, "sum"))


@workload("ops", "mean(dim=1) (256,1024) fwd+bwd")
def mean_fb(torch, tiny: bool = False):
    return _fwd_bwd(torch, *_reduce(torch, tiny, "mean"))
