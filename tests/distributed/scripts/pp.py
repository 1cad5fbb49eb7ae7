"""Pipeline parallel (GPipe and 1F1B) against the unsplit model: loss and gradients (run under mpiexec)."""

import numpy as np

import ember
import ember.distributed as dist
import ember.nn as nn
from ember.distributed.pipeline import PipelineStage, Schedule1F1B, ScheduleGPipe, split_sequential

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()


def model():
    ember.manual_seed(0)
    layers = []
    for _ in range(n):
        layers += [nn.Linear(8, 8), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(8, 3))


x = ember.randn(12, 8)
y = ember.randint(0, 3, (12,))
ref = model()
ref_loss = nn.functional.cross_entropy(ref(x), y)
ref_loss.backward()
ref_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}

for Sched in (ScheduleGPipe, Schedule1F1B):
    full = model()
    parts = split_sequential(full, n)
    stage = PipelineStage(parts[r], r, n)
    sched = Sched(stage, n_microbatches=4, loss_fn=nn.functional.cross_entropy)
    losses = []
    out = sched.step(x if r == 0 else None, target=y if r == n - 1 else None, losses=losses)
    if r == n - 1:
        np.testing.assert_allclose(out.item(), ref_loss.item(), rtol=1e-5)
        assert len(losses) == 4
    mine = {id(p) for p in parts[r].parameters()}
    checked = 0
    for k, p in full.named_parameters():
        if id(p) in mine:
            np.testing.assert_allclose(
                p.grad.numpy(), ref_grads[k], rtol=1e-5, atol=1e-7, err_msg=f"{Sched.__name__} {k}"
            )
            checked += 1
    assert checked > 0
    s = sched.last_stats
    print(
        f"rank {r}: OK {Sched.__name__} {checked} grads, bubble ideal {s['ideal_bubble']:.2f} measured {s['measured_bubble']:.2f}",
        flush=True,
    )
dist.destroy_process_group()
