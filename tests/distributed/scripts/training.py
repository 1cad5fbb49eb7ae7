"""setup_data_parallel in its three modes trains to the same weights (run under mpiexec)."""

import numpy as np

import ember
import ember.distributed as dist
from ember.distributed.training import consolidate_optimizer, is_main_process, setup_data_parallel

assert not dist.is_initialized()
final = {}
for mode in ("dp", "zero", "zero2"):
    ember.manual_seed(0)
    net = ember.nn.Sequential(ember.nn.Linear(4, 8), ember.nn.Tanh(), ember.nn.Linear(8, 1))
    model, opt, inner = setup_data_parallel(net, ember.optim.Adam, mode, lr=0.05)
    r, n = dist.get_rank(), dist.get_world_size()
    ember.manual_seed(1)
    x = ember.randn(8 * n, 4)
    y = x.sum(-1, keepdim=True)
    for _ in range(5):
        loss = ember.nn.functional.mse_loss(model(x[r * 8 : (r + 1) * 8]), y[r * 8 : (r + 1) * 8])
        loss.backward()
        opt.step()
        opt.zero_grad()
    sd = consolidate_optimizer(opt)
    assert (sd is not None) == is_main_process()
    final[mode] = np.concatenate([p.detach().numpy().ravel() for p in inner.parameters()])
np.testing.assert_allclose(final["zero"], final["dp"], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(final["zero2"], final["dp"], rtol=1e-5, atol=1e-6)
print(f"rank {dist.get_rank()}: OK setup_data_parallel dp == zero == zero2", flush=True)
