"""Differentiable collectives: values and gradients against what each rank's math says (mpiexec)."""

import numpy as np

import ember
import ember.distributed as dist
import ember.distributed.nn.functional as fc

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()


def leaf(*shape):
    return (ember.arange(int(np.prod(shape)), dtype=ember.float32).reshape(shape) + 10 * r).requires_grad_(True)


def grad_of(fn, x, weight):
    """d(sum_ranks sum(w_rank * fn(x)))/dx on this rank, via backward of this rank's term."""
    y = fn(x)
    (y * weight).sum().backward()
    return y, x.grad.numpy()


w = float(r + 1)  # a different downstream weight per rank makes the backward collective matter
total_w = sum(k + 1 for k in range(n))

# all_reduce: y = sum_k x_k on every rank; dL/dx_r = sum_k w_k
x = leaf(2, 3)
y, g = grad_of(fc.all_reduce, x, w)
np.testing.assert_allclose(y.detach().numpy(), sum(np.arange(6).reshape(2, 3) + 10 * k for k in range(n)))
np.testing.assert_allclose(g, np.full((2, 3), total_w))
# broadcast from rank 1: dL/dx_1 = sum_k w_k, others 0
x = leaf(3)
y, g = grad_of(lambda t: fc.broadcast(t, src=1), x, w)
np.testing.assert_allclose(y.detach().numpy(), np.arange(3) + 10)
np.testing.assert_allclose(g, np.full(3, total_w if r == 1 else 0.0))
# all_gather_tensor along dim 1: rank r's block gets every rank's weight
x = leaf(2, 2)
y, g = grad_of(lambda t: fc.all_gather_tensor(t, dim=1), x, w)
assert tuple(y.shape) == (2, 2 * n)
np.testing.assert_allclose(y.detach().numpy()[:, 2 * r : 2 * r + 2], np.arange(4).reshape(2, 2) + 10 * r)
np.testing.assert_allclose(g, np.full((2, 2), total_w))
# reduce_scatter_tensor along dim 0: block r of the sum; gradient is every rank's weight on its block
x = leaf(2 * n, 2)
y, g = grad_of(lambda t: fc.reduce_scatter_tensor(t, dim=0), x, w)
want = sum(np.arange(4 * n).reshape(2 * n, 2) + 10 * k for k in range(n))[2 * r : 2 * r + 2]
np.testing.assert_allclose(y.detach().numpy(), want)
np.testing.assert_allclose(g, np.repeat([k + 1.0 for k in range(n)], 4).reshape(2 * n, 2))
# all_gather (tuple)
x = leaf(3)
parts = fc.all_gather(x)
(sum(p * (i + 1) for i, p in enumerate(parts)).sum() * w).backward()
np.testing.assert_allclose(x.grad.numpy(), np.full(3, (r + 1) * total_w))
print(f"rank {r}: OK differentiable collectives", flush=True)
dist.destroy_process_group()
