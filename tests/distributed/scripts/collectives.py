"""Every collective against NumPy's answer, on the world and on a sub-group (run under mpiexec)."""

import datetime

import numpy as np

import ember
import ember.distributed as dist

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
r, n = dist.get_rank(), dist.get_world_size()
checks = []


def check(name, got, want):
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64), rtol=1e-6, err_msg=name
    )
    checks.append(name)


def val(rank, shape=(2, 3), dtype=ember.float32):
    return ember.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) + rank * 10


ranks = range(n)
# all_reduce, every op, sync and async
for op, fn in [
    (dist.ReduceOp.SUM, np.sum),
    (dist.ReduceOp.AVG, np.mean),
    (dist.ReduceOp.PRODUCT, np.prod),
    (dist.ReduceOp.MIN, np.min),
    (dist.ReduceOp.MAX, np.max),
]:
    t = val(r)
    w = dist.all_reduce(t, op=op, async_op=True)
    assert w.wait() is True
    check(f"all_reduce {op.name}", t.numpy(), fn(np.stack([val(k).numpy() for k in ranks]), axis=0))
for op, fn in [
    (dist.ReduceOp.BAND, np.bitwise_and),
    (dist.ReduceOp.BOR, np.bitwise_or),
    (dist.ReduceOp.BXOR, np.bitwise_xor),
]:
    t = val(r, dtype=ember.int64) + 3
    dist.all_reduce(t, op=op)
    check(
        f"all_reduce {op.name}", t.numpy(), fn.reduce(np.stack([val(k, dtype=ember.int64).numpy() + 3 for k in ranks]))
    )
t = val(r, dtype=ember.float16)
dist.all_reduce(t)
check("all_reduce float16", t.numpy(), sum(val(k).numpy() for k in ranks))
# a non-contiguous view is reduced in place through its base
base = ember.zeros(4, 6)
view = base[:, ::2]
view.copy_(val(r, (4, 3)))
dist.all_reduce(view)
check("all_reduce view", base[:, ::2].numpy(), sum(val(k, (4, 3)).numpy() for k in ranks))
check("all_reduce view untouched", base[:, 1::2].numpy(), np.zeros((4, 3)))
# reduce, broadcast
t = val(r)
dist.reduce(t, dst=n - 1, op=dist.ReduceOp.SUM)
if r == n - 1:
    check("reduce", t.numpy(), sum(val(k).numpy() for k in ranks))
t = val(r)
dist.broadcast(t, src=1)
check("broadcast", t.numpy(), val(1).numpy())
# gathers
out = [ember.empty(2, 3) for _ in ranks]
dist.all_gather(out, val(r))
for k in ranks:
    check("all_gather", out[k].numpy(), val(k).numpy())
big = ember.empty(2 * n, 3)
dist.all_gather_into_tensor(big, val(r), async_op=True).wait()
check("all_gather_into_tensor", big.numpy(), np.concatenate([val(k).numpy() for k in ranks]))
gl = [ember.empty(2, 3) for _ in ranks] if r == 0 else None
dist.gather(val(r), gl, dst=0)
if r == 0:
    for k in ranks:
        check("gather", gl[k].numpy(), val(k).numpy())
t = ember.empty(2, 3)
dist.scatter(t, [val(k) * 2 for k in ranks] if r == 0 else None, src=0)
check("scatter", t.numpy(), val(r).numpy() * 2)
# reduce-scatters
t = ember.empty(2, 3)
dist.reduce_scatter(t, [val(r) + k for k in ranks])
check("reduce_scatter", t.numpy(), sum(val(k).numpy() + r for k in ranks))
t = ember.empty(2, 3)
dist.reduce_scatter_tensor(t, ember.cat([val(r) + k for k in ranks]), op=dist.ReduceOp.AVG)
check("reduce_scatter_tensor AVG", t.numpy(), np.mean([val(k).numpy() + r for k in ranks], axis=0))
# all-to-all, even and uneven
outs = [ember.empty(2, 3) for _ in ranks]
dist.all_to_all(outs, [val(r) + 100 * k for k in ranks])
for k in ranks:
    check("all_to_all", outs[k].numpy(), val(k).numpy() + 100 * r)
# rank r sends (j + r + 1) rows to rank j; row values encode sender and receiver
send_rows = [j + r + 1 for j in ranks]
recv_rows = [r + k + 1 for k in ranks]
inp = ember.cat([ember.full((s, 2), float(100 * r + j)) for j, s in enumerate(send_rows)])
out = ember.empty(sum(recv_rows), 2)
dist.all_to_all_single(out, inp, output_split_sizes=recv_rows, input_split_sizes=send_rows)
want = np.concatenate([np.full((s, 2), 100.0 * k + r) for k, s in enumerate(recv_rows)])
check("all_to_all_single uneven", out.numpy(), want)
out = ember.empty(2 * n, 3)
dist.all_to_all_single(out, ember.cat([val(r) + 100 * k for k in ranks]))
check("all_to_all_single even", out.numpy(), np.concatenate([val(k).numpy() + 100 * r for k in ranks]))
# point to point: a ring, blocking, nonblocking and batched
nxt, prv = (r + 1) % n, (r - 1) % n
t = ember.empty(2, 3)
if r % 2 == 0:
    dist.send(val(r), dst=nxt)
    src = dist.recv(t, src=prv)
else:
    src = dist.recv(t)
    dist.send(val(r), dst=nxt)
check("send/recv", t.numpy(), val(prv).numpy())
assert src == prv, (src, prv)
t = ember.empty(2, 3)
ops = [dist.P2POp(dist.isend, val(r) * 3, nxt), dist.P2POp(dist.irecv, t, prv)]
for w in dist.batch_isend_irecv(ops):
    w.wait()
check("batch_isend_irecv", t.numpy(), val(prv).numpy() * 3)
# objects (restricted encoding)
objs = [{"a": (1, 2.5, float("inf")), 3: b"xy", "t": ember.ones(2)}, None] if r == 0 else [None, None]
dist.broadcast_object_list(objs, src=0)
assert objs[0]["a"] == (1, 2.5, float("inf")) and objs[0][3] == b"xy" and objs[1] is None, objs
check("broadcast_object_list tensor", objs[0]["t"].numpy(), np.ones(2))
got = [None] * n
dist.all_gather_object(got, {"rank": r, "s": {r}})
assert got == [{"rank": k, "s": {k}} for k in ranks], got
checks.append("all_gather_object")
# a sub-group of the odd ranks (group ranks translate to global ranks)
odd = dist.new_group([k for k in ranks if k % 2 == 1])
if r % 2 == 1:
    t = val(r)
    dist.all_reduce(t, group=odd)
    check("group all_reduce", t.numpy(), sum(val(k).numpy() for k in ranks if k % 2 == 1))
    t = val(r)
    dist.broadcast(t, src=1, group=odd)
    check("group broadcast", t.numpy(), val(1).numpy())
    assert dist.get_rank(odd) == r // 2 and dist.get_world_size(odd) == len(range(1, n, 2))
dist.barrier()
print(f"rank {r}: {len(checks)} checks passed", flush=True)
dist.destroy_process_group()
assert not dist.is_initialized()
