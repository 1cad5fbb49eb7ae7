"""Expert-parallel MoE against the unsplit MoE on each rank's tokens: outputs and gradients (mpiexec)."""

import numpy as np

import ember
import ember.distributed as dist
from ember.distributed.expert_parallel import ExpertParallelMoE

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()
E = 2 * n
ember.manual_seed(0)
full = ember.nn.MoE(d_model=8, d_hidden=16, num_experts=E, top_k=2, capacity_factor=1.0)
ep = ExpertParallelMoE.from_moe(full)
ember.manual_seed(10 + r)  # every rank has its own tokens
x = ember.randn(2, 12, 8)

ref = full(x)
(ref.pow(2).sum() + full.weighted_aux_loss()).backward()
y = ep(x)
(y.pow(2).sum() + ep.weighted_aux_loss()).backward()
np.testing.assert_allclose(y.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
assert ep.dropped_tokens == full.dropped_tokens and ep.dropped_tokens > 0, (ep.dropped_tokens, full.dropped_tokens)
np.testing.assert_allclose(ep.aux_loss.item(), full.aux_loss.item(), rtol=1e-6)
np.testing.assert_allclose(ep.router.weight.grad.numpy(), full.router.weight.grad.numpy(), rtol=1e-5, atol=1e-7)
# an expert's gradient sums the contributions of every rank's tokens
for e in range(E):
    ref_params = list(full.experts.experts[e].named_parameters())
    totals = []
    for _, q in ref_params:
        t = q.grad.detach().clone()
        dist.all_reduce(t)  # every rank, every expert, same order
        totals.append(t)
    if e in ep.experts.expert_ids:
        mine = ep.experts.experts[ep.experts._local[e]].parameters()
        for (name, _), p, t in zip(ref_params, mine, totals):
            np.testing.assert_allclose(p.grad.numpy(), t.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"expert {e} {name}")
dropped = ep.global_dropped_tokens()
print(
    f"rank {r}: OK expert parallel MoE ({len(ep.experts.expert_ids)} of {E} experts here, {dropped} dropped in the group)",
    flush=True,
)
dist.destroy_process_group()
