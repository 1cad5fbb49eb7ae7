"""DP x TP, DP x EP and PP x DP on a (2, 2) device mesh of 4 ranks (run under mpiexec -n 4)."""

import numpy as np

import ember
import ember.distributed as dist
import ember.nn as nn
from ember.distributed import tensor_parallel as tp
from ember.distributed.device_mesh import init_device_mesh
from ember.distributed.expert_parallel import ExpertParallelMoE
from ember.distributed.pipeline import PipelineStage, Schedule1F1B, split_sequential
from ember.models.gpt import GPT, GPTConfig
from ember.nn.parallel import DistributedDataParallel as DDP
from ember.nn.parallel import average_gradients

mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
r = dist.get_rank()
assert dist.get_process_group_ranks(mesh.get_group("tp")) == [2 * (r // 2), 2 * (r // 2) + 1]
assert dist.get_process_group_ranks(mesh.get_group("dp")) == [r % 2, r % 2 + 2]
assert mesh["tp"].size() == 2 and mesh.get_local_rank("dp") == r // 2
print(f"rank {r}: OK mesh groups", flush=True)
dp_rank = mesh.get_local_rank("dp")
STEPS = 5


def avg_over(group, value):
    t = ember.tensor([value])
    dist.all_reduce(t, op=dist.ReduceOp.AVG, group=group)
    return t.item()


# ----- DP x TP: a tensor-parallel GPT, data-parallel over the other axis, equals one process -----
cfg = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=4, n_embd=16, dropout=0.0)
ember.manual_seed(0)
ref = GPT(cfg)
model = DDP(tp.TensorParallelGPT.from_gpt(ref, group=mesh.get_group("tp")), process_group=mesh.get_group("dp"))
idx, tgt = ember.randint(0, 16, (STEPS, 4, 8)), ember.randint(0, 16, (STEPS, 4, 8))
opt, ref_opt = ember.optim.SGD(model.parameters(), lr=0.5), ember.optim.SGD(ref.parameters(), lr=0.5)
half = slice(2 * dp_rank, 2 * dp_rank + 2)
for s in range(STEPS):
    _, ref_loss = ref(idx[s], tgt[s])
    ref_loss.backward()
    ref_opt.step()
    ref_opt.zero_grad()
    _, loss = model(idx[s][half], tgt[s][half])
    loss.backward()
    opt.step()
    opt.zero_grad()
    np.testing.assert_allclose(avg_over(mesh.get_group("dp"), loss.item()), ref_loss.item(), rtol=1e-4)
print(f"rank {r}: OK DPxTP equals one process over {STEPS} steps (loss {ref_loss.item():.4f})", flush=True)

# ----- PP x DP: two pipeline stages, each data-parallel, equals one process -----
pp_mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "pp"))
pp = pp_mesh.get_group("pp")
ember.manual_seed(1)
seq = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
ember.manual_seed(1)
ref_seq = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
stage_idx = dist.get_rank(pp)
part = split_sequential(seq, 2)[stage_idx]
sched = Schedule1F1B(PipelineStage(part, stage_idx, 2, group=pp), n_microbatches=2, loss_fn=nn.functional.cross_entropy)
X, Y = ember.randn(STEPS, 8, 8), ember.randint(0, 3, (STEPS, 8))
opt, ref_opt = ember.optim.SGD(part.parameters(), lr=0.3), ember.optim.SGD(ref_seq.parameters(), lr=0.3)
rows = slice(4 * dp_rank, 4 * dp_rank + 4)
for s in range(STEPS):
    ref_loss = nn.functional.cross_entropy(ref_seq(X[s]), Y[s])
    ref_loss.backward()
    ref_opt.step()
    ref_opt.zero_grad()
    loss = sched.step(X[s][rows] if stage_idx == 0 else None, target=Y[s][rows] if stage_idx == 1 else None)
    average_gradients(part.parameters(), group=pp_mesh.get_group("dp"))
    opt.step()
    opt.zero_grad()
    if stage_idx == 1:
        np.testing.assert_allclose(avg_over(mesh.get_group("dp"), loss.item()), ref_loss.item(), rtol=1e-5)
    else:
        avg_over(mesh.get_group("dp"), 0.0)
print(
    f"rank {r}: OK PPxDP equals one process over {STEPS} steps (bubble {sched.last_stats['ideal_bubble']:.2f})",
    flush=True,
)

# ----- DP x EP: experts sharded along one axis, data parallel along the other; it trains -----
ep_group, dp_group = mesh.get_group("tp"), mesh.get_group("dp")
ember.manual_seed(2)
moe = ExpertParallelMoE.from_moe(nn.MoE(d_model=8, d_hidden=16, num_experts=4, top_k=2), group=ep_group)
head = nn.Linear(8, 1)
expert_params = list(moe.experts.parameters())
shared = list(moe.router.parameters()) + list(head.parameters())
opt = ember.optim.Adam(expert_params + shared, lr=0.02)
ember.manual_seed(100 + r)
x = ember.randn(16, 8)
target = x.sum(-1, keepdim=True).tanh()
first = None
for _ in range(15):
    loss = nn.functional.mse_loss(head(moe(x)), target) + moe.weighted_aux_loss()
    loss.backward()
    average_gradients(shared, group=None)  # replicated everywhere
    average_gradients(expert_params, group=dp_group)  # replicas of the same experts
    for p in expert_params:  # an expert's gradient already sums its EP group's tokens
        p.grad.mul_(1.0 / dist.get_world_size(ep_group))
    opt.step()
    opt.zero_grad()
    g = avg_over(None, loss.item())
    first = g if first is None else first
assert g < 0.8 * first, (first, g)
w = [None] * 2
dist.all_gather_object(w, expert_params[0].detach().numpy().tolist(), group=dp_group)
assert np.allclose(w[0], w[1]), "expert replicas diverged across the data-parallel axis"
print(f"rank {r}: OK DPxEP trains (loss {first:.4f} -> {g:.4f}, {moe.global_dropped_tokens()} dropped)", flush=True)
dist.destroy_process_group()
