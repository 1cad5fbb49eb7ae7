"""One rank of a distributed benchmark, written in the PyTorch API and run on Ember or PyTorch.

    ember run -n 2 bench/distributed/worker.py ember ddp gpt
    python -m torch.distributed.run --nproc-per-node 2 bench/distributed/worker.py torch ddp gpt

Tasks: ``ddp MODEL`` (median training step with DistributedDataParallel, MODEL mlp|gpt),
``allreduce`` (16 MB float32), ``zero`` (Ember: DDP + Adam against ZeRO-1 and ZeRO-2, step time
and bytes held per rank), ``trace`` (Ember: exposed communication of a DDP GPT step read
from the profiler's Chrome trace), ``tp`` / ``pp`` (Ember: tensor / pipeline parallel GPT-sized
steps against one process). Rank 0 prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

FRAMEWORK, TASK = sys.argv[1], sys.argv[2]
ARGS = sys.argv[3:]
if FRAMEWORK == "ember":
    import ember as torch
else:
    import torch
    import torch.distributed
    import torch.nn.parallel
# attribute access, so that `torch` means whichever framework was imported above
dist = torch.distributed
nn = torch.nn
F = torch.nn.functional
DDP = torch.nn.parallel.DistributedDataParallel

torch.set_num_threads(1)
dist.init_process_group("gloo")
RANK, WORLD = dist.get_rank(), dist.get_world_size()
WARMUP, STEPS = 3, int(os.environ.get("BENCH_STEPS", "15"))


def result(**kw):
    if RANK == 0:
        kw.update(framework=FRAMEWORK, task=TASK, args=ARGS, world=WORLD)
        print("RESULT " + json.dumps(kw), flush=True)


def median_time(fn, steps=STEPS, warmup=WARMUP):
    times = []
    for _ in range(warmup + steps):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    t = torch.tensor([statistics.median(times[warmup:])], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    return t.item()


def mlp():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    return m, lambda model: F.cross_entropy(model(x), y)


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.fc, self.out = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.heads = heads

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=65, c=128, layers=4, heads=4, block=64):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(block, c)
        self.h = nn.ModuleList([Block(c, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(c)
        self.head = nn.Linear(c, vocab, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        return self.head(self.ln(x))


def gpt(batch=8):
    torch.manual_seed(0)
    m = GPT()
    idx, tgt = torch.randint(0, 65, (batch, 64)), torch.randint(0, 65, (batch, 64))
    return m, lambda model: F.cross_entropy(model(idx).view(-1, 65), tgt.view(-1))


def train_step(model, loss_fn, opt):
    def step():
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()

    return step


if TASK == "ddp":
    model, loss_fn = {"mlp": mlp, "gpt": gpt}[ARGS[0]]()
    ddp = DDP(model) if WORLD > 1 else model
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    sec = median_time(train_step(ddp, loss_fn, opt))
    result(model=ARGS[0], step_ms=sec * 1e3)

elif TASK == "allreduce":
    n = 4 * 1024 * 1024  # 16 MB of float32
    t = torch.ones(n)
    if FRAMEWORK == "ember":
        from mpi4py import MPI

        arr, comm = t.numpy(), MPI.COMM_WORLD
        ours, raw = [], []
        for _ in range(25):  # alternate, so both see the same machine load
            ours.append(median_time(lambda: dist.all_reduce(t), steps=1, warmup=0))
            raw.append(median_time(lambda: comm.Allreduce(MPI.IN_PLACE, arr), steps=1, warmup=0))
        result(allreduce_16MB_ms=statistics.median(ours[3:]) * 1e3, mpi4py_16MB_ms=statistics.median(raw[3:]) * 1e3)
    else:
        result(allreduce_16MB_ms=median_time(lambda: dist.all_reduce(t), steps=22) * 1e3)

elif TASK == "trace":
    from ember.profiler import profile

    model, loss_fn = gpt()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    step = train_step(ddp, loss_fn, opt)
    for _ in range(WARMUP):
        step()
    fractions, overlapped = [], []
    for _ in range(5):
        dist.barrier()
        with profile() as prof:
            t0 = time.perf_counter()
            step()
            wall = time.perf_counter() - t0
        path = os.path.join(tempfile.mkdtemp(), "trace.json")
        prof.export_chrome_trace(path)
        events = json.load(open(path))["traceEvents"]
        exposed = sum(e["dur"] for e in events if e["name"] == "DistributedDataParallel.wait_allreduce") / 1e6
        comm = sum(e["dur"] for e in events if e["cat"] == "communication" and e["name"] == "all_reduce") / 1e6
        fractions.append(exposed / wall)
        overlapped.append(max(comm - exposed, 0.0) / wall)
    # The rank that reaches the wait last waits for communication alone; the other one also waits
    # for it (load imbalance). The smaller of the two per step is the exposed communication proper.
    both = torch.tensor(fractions, dtype=torch.float64)
    dist.all_reduce(both, op=dist.ReduceOp.MIN)
    result(
        exposed_fraction=statistics.median(fractions),
        exposed_fraction_min_rank=statistics.median(both.tolist()),
        comm_span_fraction=statistics.median(overlapped),
        buckets=len(ddp._buckets),
    )

elif TASK == "zero":  # Ember: DDP + Adam against ZeRO-1 and ZeRO-2, step time and bytes held per rank
    from ember.distributed.optim import ZeroRedundancyOptimizer

    def nbytes(arrays):
        return sum(a.nbytes for a in arrays)

    rows = {}
    for mode in ("ddp", "zero1", "zero2"):
        model, loss_fn = gpt()
        params = list(model.parameters())
        if mode == "ddp":
            wrapped = DDP(model)
            opt = torch.optim.Adam(params, lr=1e-3)
        elif mode == "zero1":
            wrapped = DDP(model)
            opt = ZeroRedundancyOptimizer(params, torch.optim.Adam, stage=1, lr=1e-3)
        else:
            wrapped = model
            opt = ZeroRedundancyOptimizer(params, torch.optim.Adam, stage=2, lr=1e-3)
        sec = median_time(train_step(wrapped, loss_fn, opt))
        loss_fn(wrapped).backward()  # gradients as they stand after a backward, before the step
        inner = opt.optim if mode != "ddp" else opt
        state = nbytes(v._data for st in inner.state.values() for v in st.values() if hasattr(v, "_data"))
        grads = nbytes(p._grad._data for p in params if p._grad is not None)
        if mode == "zero2":
            opt._shards.finish()
            grads += nbytes(f.shard_param._grad._data for f in opt._flat)
        else:
            grads += nbytes(b.flat for b in wrapped._buckets)  # DDP's bucket buffers
        opt.zero_grad()
        mem = torch.tensor([state, grads], dtype=torch.float64)
        dist.all_reduce(mem, op=dist.ReduceOp.MAX)
        rows[mode] = {
            "step_ms": sec * 1e3,
            "optimizer_state_MB": mem[0].item() / 2**20,
            "grads_MB": mem[1].item() / 2**20,
        }
    result(params_MB=nbytes(p._data for p in params) / 2**20, **rows)

elif TASK in ("tp", "pp"):
    import ember
    from ember.models.gpt import GPT as EGPT
    from ember.models.gpt import GPTConfig

    cfg = GPTConfig(block_size=64, vocab_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    ember.manual_seed(0)
    full = EGPT(cfg)
    idx, tgt = ember.randint(0, 64, (8, 64)), ember.randint(0, 64, (8, 64))

    def single():
        full.zero_grad()
        full(idx, tgt)[1].backward()

    base = median_time(single)
    if TASK == "tp":
        from ember.distributed.tensor_parallel import TensorParallelGPT

        tp = TensorParallelGPT.from_gpt(full)

        def step():
            tp.zero_grad()
            tp(idx, tgt)[1].backward()

        sec = median_time(step)
        result(single_ms=base * 1e3, tp_ms=sec * 1e3, speedup=base / sec, ideal_speedup=WORLD)
    else:
        from ember.distributed.pipeline import PipelineStage, Schedule1F1B

        blocks = list(full.transformer.h)
        per = len(blocks) // WORLD

        class First(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte, self.wpe = full.transformer.wte, full.transformer.wpe
                self.h = nn.ModuleList(blocks[:per])

            def forward(self, i):
                x = self.wte(i) + self.wpe(ember.arange(i.shape[1]))
                for b in self.h:
                    x = b(x)[0]
                return x

        class Middle(nn.Module):
            def __init__(self, k):
                super().__init__()
                self.h = nn.ModuleList(blocks[k * per : (k + 1) * per])

            def forward(self, x):
                for b in self.h:
                    x = b(x)[0]
                return x

        class Last(Middle):
            def __init__(self):
                super().__init__(WORLD - 1)
                self.ln, self.head = full.transformer.ln_f, nn.Linear(128, 64, bias=False)

            def forward(self, x):
                return self.head(self.ln(super().forward(x))).view(-1, 64)

        part = First() if RANK == 0 else Last() if RANK == WORLD - 1 else Middle(RANK)
        m = int(ARGS[0]) if ARGS else 4
        sched = Schedule1F1B(PipelineStage(part, RANK, WORLD), m, loss_fn=lambda y, t: F.cross_entropy(y, t.view(-1)))

        def step():
            part.zero_grad()
            sched.step(idx if RANK == 0 else None, target=tgt if RANK == WORLD - 1 else None)

        sec = median_time(step)
        bubble = torch.tensor([sched.last_stats["measured_bubble"]], dtype=torch.float64)
        dist.all_reduce(bubble, op=dist.ReduceOp.AVG)
        result(
            single_ms=base * 1e3,
            pp_ms=sec * 1e3,
            speedup=base / sec,
            microbatches=m,
            ideal_bubble=sched.last_stats["ideal_bubble"],
            measured_bubble=bubble.item(),
        )
dist.destroy_process_group()
