"""DDP against one process on the global batch: losses and weights over 10 steps (run under mpiexec)."""

import json
import os
import sys
import tempfile

import numpy as np

import ember
import ember.distributed as dist
import ember.nn as nn
from ember.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()
STEPS, B = 10, 8 * n


class Net(nn.Module):
    def __init__(self, spare=False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.head = nn.Linear(32, 3)
        if spare:
            self.spare = nn.Linear(32, 3)  # used only when use_spare
        self.use_spare = False

    def forward(self, x):
        h = self.body(x)
        return self.spare(h) if self.use_spare else self.head(h)


def make(spare=False):
    ember.manual_seed(r)  # different on every rank: DDP must broadcast rank 0's weights
    return Net(spare)


rng = np.random.default_rng(0)
X = ember.tensor(rng.standard_normal((STEPS, B, 6)).astype(np.float32))
Y = ember.tensor(rng.integers(0, 3, (STEPS, B)))
loss_fn = nn.CrossEntropyLoss()


def train(model, params, shard, steps=STEPS, spare_at=None, accumulate=False):
    opt = ember.optim.SGD(params, lr=0.1, momentum=0.9)
    losses = []
    for s in range(steps):
        x, y = X[s], Y[s]
        if shard:
            x, y = x[r * B // n : (r + 1) * B // n], y[r * B // n : (r + 1) * B // n]
        inner = model.module if isinstance(model, DDP) else model
        inner.use_spare = spare_at is not None and s % spare_at == 1
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def reference(**kw):
    ember.manual_seed(0)
    m = Net("spare_at" in kw)
    return m, train(m, m.parameters(), shard=False, **kw)


def global_mean(losses):
    t = ember.tensor(losses)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    return t.tolist()


def compare(name, ref, ref_losses, model, losses):
    losses = global_mean(losses)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=name)
    for (k, a), b in zip(model.module.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")
    print(f"rank {r}: OK {name}", flush=True)


ref, ref_losses = reference()
for name, kw in [
    ("default buckets", {}),
    ("many small buckets", {"bucket_cap_mb": 0.0005}),
    ("gradient_as_bucket_view", {"bucket_cap_mb": 0.0005, "gradient_as_bucket_view": True}),
]:
    m = DDP(make(), **kw)
    assert len(m._buckets) >= (3 if "bucket_cap_mb" in kw else 1), len(m._buckets)
    compare(name, ref, ref_losses, m, train(m, m.parameters(), shard=True))

# find_unused_parameters: the spare head is used every other step only
ref_u, ref_u_losses = reference(spare_at=2)
m = DDP(make(spare=True), find_unused_parameters=True, bucket_cap_mb=0.001)
compare("find_unused_parameters", ref_u, ref_u_losses, m, train(m, m.parameters(), shard=True, spare_at=2))

# no_sync: two half-batches accumulated locally then synced equal one step on the global batch
ember.manual_seed(0)
single = Net()
x, y = X[0], Y[0]
loss_fn(single(x), y).backward()
m = DDP(make())
lo, hi = r * B // n, (r + 1) * B // n
mid = (lo + hi) // 2
with m.no_sync():
    (loss_fn(m(x[lo:mid]), y[lo:mid]) * 0.5).backward()
(loss_fn(m(x[mid:hi]), y[mid:hi]) * 0.5).backward()
for (k, p), q in zip(m.module.named_parameters(), single.parameters()):
    if q.grad is not None:
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"no_sync {k}")
print(f"rank {r}: OK no_sync", flush=True)

# broadcast_buffers: rank 0's BatchNorm running stats reach every rank
ember.manual_seed(0)
bn = DDP(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)))
bn(X[0][r * 4 : r * 4 + 4] * (r + 1))  # different statistics per rank
bn(X[1][:4])
mean = bn.module[1].running_mean.clone()
got = [None] * n
dist.all_gather_object(got, mean.tolist())
assert all(np.allclose(g, got[0]) for g in got), got
print(f"rank {r}: OK broadcast_buffers", flush=True)

# the profiler's trace shows all-reduce spans that start while backward ops still run
from ember.profiler import profile  # noqa: E402

m = DDP(make(), bucket_cap_mb=0.001)
with profile() as prof:
    loss_fn(m(X[0]), Y[0]).backward()
path = os.path.join(tempfile.mkdtemp(), f"trace{r}.json")
prof.export_chrome_trace(path)
events = json.load(open(path))["traceEvents"]
comm = [e for e in events if e["cat"] == "communication" and e["name"] == "all_reduce"]
back = [e for e in events if e["cat"] == "backward"]
assert comm and back and comm[0]["tid"] != back[0]["tid"], (comm[:1], back[:1])
last_back_end = max(e["ts"] + e["dur"] for e in back)
assert comm[0]["ts"] < last_back_end, "first all-reduce started only after the backward"
print(f"rank {r}: OK overlap trace ({len(comm)} all-reduce spans)", flush=True)
dist.destroy_process_group()
sys.exit(0)
