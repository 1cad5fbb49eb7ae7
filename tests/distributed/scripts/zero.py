"""ZeRO stages 1 and 2 against one process with Adam on the global batch (run under mpiexec)."""

import copy

import numpy as np

import ember
import ember.distributed as dist
import ember.nn as nn
from ember.distributed.optim import ZeroRedundancyOptimizer
from ember.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()
STEPS, B = 10, 4 * n
rng = np.random.default_rng(1)
X = ember.tensor(rng.standard_normal((STEPS, B, 8)).astype(np.float32))
Y = ember.tensor(rng.standard_normal((STEPS, B, 2)).astype(np.float32))
lo, hi = r * B // n, (r + 1) * B // n


def net():
    ember.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 2))


def groups(m):
    ps = list(m.parameters())
    return [{"params": ps[:4]}, {"params": ps[4:], "lr": 0.02}]


def run(model, opt, shard):
    losses = []
    for s in range(STEPS):
        x, y = (X[s][lo:hi], Y[s][lo:hi]) if shard else (X[s], Y[s])
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        t = ember.tensor([loss.item()])
        if shard:
            dist.all_reduce(t, op=dist.ReduceOp.AVG)
        losses.append(t.item())
    return losses


ref = net()
ref_opt = ember.optim.Adam(groups(ref), lr=0.01)
ref_losses = run(ref, ref_opt, shard=False)
full_state = sum(v._data.nbytes for st in ref_opt.state.values() for v in st.values() if hasattr(v, "_data"))

for stage in (1, 2):
    m = net()
    model = DDP(m) if stage == 1 else m
    opt = ZeroRedundancyOptimizer(groups(m), ember.optim.Adam, stage=stage, lr=0.01)
    losses = run(model, opt, shard=True)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=f"stage {stage} losses")
    for a, b in zip(m.parameters(), ref.parameters()):
        np.testing.assert_allclose(
            a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"stage {stage}"
        )
    mem = opt.memory_bytes()
    every = [None] * n
    dist.all_gather_object(every, mem["optimizer_state"])
    if stage == 1:  # whole parameters per rank: the shares add up to the unsharded state
        assert sum(every) == full_state and max(every) < full_state, (every, full_state)
    else:  # flat shards: an equal share each, up to padding (and Adam's step counters)
        assert max(every) <= full_state / n + 64, (every, full_state)
    print(f"rank {r}: OK zero stage {stage} memory {mem} (unsharded state {full_state} B)", flush=True)
    # the consolidated checkpoint is the unsharded optimizer's
    opt.consolidate_state_dict(to=0)
    if r == 0:
        sd, ref_sd = opt.state_dict(), ref_opt.state_dict()
        assert sorted(sd["state"]) == sorted(ref_sd["state"]), (sorted(sd["state"]), sorted(ref_sd["state"]))
        for k, st in ref_sd["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(sd["state"][k][key].numpy(), st[key].numpy(), rtol=1e-5, atol=1e-8)
        assert [g["lr"] for g in sd["param_groups"]] == [0.01, 0.02]
        print(f"rank {r}: OK zero stage {stage} consolidated state_dict", flush=True)
    # loading the unsharded state into a fresh sharded optimizer continues identically
    m2 = net()
    opt2 = ZeroRedundancyOptimizer(groups(m2), ember.optim.Adam, stage=stage, lr=0.01)
    opt2.load_state_dict(copy.deepcopy(ref_opt.state_dict()))  # state tensors are live, as in torch
    ref2 = net()
    ref2_opt = ember.optim.Adam(groups(ref2), lr=0.01)
    ref2_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    for a, b, c in zip(m2.parameters(), ref2.parameters(), ref.parameters()):
        a.data.copy_(c.detach())
        b.data.copy_(c.detach())
    for model_, opt_, shard in ((DDP(m2) if stage == 1 else m2, opt2, True), (ref2, ref2_opt, False)):
        x, y = (X[0][lo:hi], Y[0][lo:hi]) if shard else (X[0], Y[0])
        nn.functional.mse_loss(model_(x), y).backward()
        opt_.step()
    for a, b in zip(m2.parameters(), ref2.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    print(f"rank {r}: OK zero stage {stage} load_state_dict", flush=True)

# ZeRO-2 overlaps: with one bucket per parameter, every bucket's reduce-scatter starts inside the
# backward (from its gradients' hooks) and the full gradients are gone when backward returns.
m = net()
opt = ZeroRedundancyOptimizer(groups(m), ember.optim.Adam, stage=2, bucket_cap_mb=1e-6, lr=0.01)
n_buckets = sum(len(f.buckets) for f in opt._flat)
assert n_buckets == len(list(m.parameters())), n_buckets
launched_in_backward = []
losses = []
for s in range(STEPS):
    loss = nn.functional.mse_loss(m(X[s][lo:hi]), Y[s][lo:hi])
    loss.backward()
    launched_in_backward.append(len(opt._shards.inflight))
    assert all(p.grad is None for p in m.parameters())
    opt.step()
    opt.zero_grad()
    t = ember.tensor([loss.item()])
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    losses.append(t.item())
assert launched_in_backward == [n_buckets] * STEPS, launched_in_backward
np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg="stage 2, bucketed")
print(f"rank {r}: OK zero stage 2 reduce-scatters {n_buckets} buckets during backward", flush=True)
dist.destroy_process_group()
