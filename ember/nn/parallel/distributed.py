"""``DistributedDataParallel``: data parallelism with gradient buckets all-reduced during backward.

At construction rank 0's parameters and buffers are broadcast, so every replica starts equal.
Parameters are grouped, in reverse registration order (roughly the order their gradients are
produced), into flat buckets of at most ``bucket_cap_mb`` (the first one 1 MB, as PyTorch, so
communication starts early). Each parameter has a post-accumulate-grad hook: when its gradient
is final the hook copies it into its bucket, and when a bucket is full the bucket's all-reduce
starts asynchronously while the backward pass goes on. The last bucket's hook waits for all of
them and writes the averaged gradients back, so ``optimizer.step()`` sees synchronized grads.

Example (``ember run -n 2 train.py``):
    >>> model = DistributedDataParallel(net)            # doctest: +SKIP
    >>> loss_fn(model(x), y).backward()                 # doctest: +SKIP
    >>> opt.step()                                      # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ember._mutations import bump
from ember.nn.modules.module import Module

__all__ = ["DistributedDataParallel", "average_gradients"]

_FIRST_BUCKET_BYTES = 1024 * 1024


class _Bucket:
    """One flat gradient buffer and the parameters whose grads it holds (views at fixed offsets)."""

    def __init__(self, index: int, params: list, dtype):
        self.index = index
        self.params = params
        self.offsets = []
        off = 0
        for p in params:
            self.offsets.append(off)
            off += p._data.size
        self.flat = np.zeros(off, dtype=dtype)
        self.pending = len(params)
        self.work = None

    def view(self, i: int) -> np.ndarray:
        p = self.params[i]
        return self.flat[self.offsets[i] : self.offsets[i] + p._data.size].reshape(p._data.shape)


class DistributedDataParallel(Module):
    """Wrap ``module`` so its gradients are averaged across the process group in backward.

    Args:
        module: the model replica (already on this rank's device).
        broadcast_buffers: broadcast rank 0's buffers (e.g. BatchNorm statistics) each forward.
        process_group: the data-parallel group (default: the world).
        bucket_cap_mb: bucket size in MiB (default 25).
        find_unused_parameters: look at the forward's graph for parameters that get no gradient,
            so their buckets are not waited for forever.
        gradient_as_bucket_view: make each ``param.grad`` a view into its bucket (saves a copy
            and the memory of a second gradient).
    """

    def __init__(
        self,
        module: Module,
        device_ids=None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group=None,
        bucket_cap_mb: float | None = None,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
        **_unused,
    ):
        super().__init__()
        from ember.distributed.process_group import _resolve

        self.module = module
        self.process_group = _resolve(process_group)
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.bucket_bytes_cap = int((25 if bucket_cap_mb is None else bucket_cap_mb) * 1024 * 1024)
        self.require_backward_grad_sync = True
        self._params = [p for p in module.parameters() if p.requires_grad]
        if not self._params:
            raise RuntimeError(
                "DistributedDataParallel is not needed when a module doesn't have any parameter that requires a gradient."
            )
        self._verify_param_shapes()
        self._sync_module_states()
        self._buckets: list[_Bucket] = []
        self._where: dict[int, tuple[_Bucket, int]] = {}
        self._build_buckets()
        self._next_bucket = 0
        self._in_flight = False
        self._unused: list = []
        self._marked_unused = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in self._params]

    # ----- construction -----
    def _verify_param_shapes(self) -> None:
        """Every rank must wrap the same model: checked once, so buckets need no per-call check."""
        from ember.distributed import all_gather_object

        mine = [[list(p.shape), p._data.dtype.name] for p in self._params]
        every = [None] * self.process_group.size()
        all_gather_object(every, mine, group=self.process_group)
        for r, theirs in enumerate(every):
            if theirs != mine:
                raise RuntimeError(
                    f"DistributedDataParallel: rank {self.process_group.ranks[r]} has parameters of other shapes or "
                    f"dtypes than rank {self.process_group.ranks[self.process_group.rank()]} "
                    f"({len(theirs)} vs {len(mine)} parameters); every rank must wrap the same model"
                )

    def _sync_module_states(self) -> None:
        """Broadcast rank 0's parameters and buffers, coalesced into one message per dtype."""
        from ember.distributed import broadcast
        from ember.tensor import _wrap

        tensors = [p for p in self.module.parameters()] + [b for b in self.module.buffers()]
        by_dtype: dict = {}
        for t in tensors:
            by_dtype.setdefault(t._data.dtype.str, []).append(t)
        for group in by_dtype.values():
            flat = np.concatenate([np.asarray(t._data).reshape(-1) for t in group])
            broadcast(_wrap(flat), src=self.process_group.ranks[0], group=self.process_group)
            off = 0
            for t in group:
                n = t._data.size
                t._data[...] = flat[off : off + n].reshape(t._data.shape)
                off += n

    def _build_buckets(self) -> None:
        cap = min(_FIRST_BUCKET_BYTES, self.bucket_bytes_cap)
        current: dict = {}  # dtype -> (params, bytes)
        for p in reversed(self._params):
            key = p._data.dtype.str
            params, size = current.get(key, ([], 0))
            params.append(p)
            size += p._data.nbytes
            if size >= cap:
                self._add_bucket(params, p._data.dtype)
                cap = self.bucket_bytes_cap
                current.pop(key, None)
            else:
                current[key] = (params, size)
        for params, _ in current.values():
            self._add_bucket(params, params[0]._data.dtype)

    def _add_bucket(self, params: list, dtype) -> None:
        b = _Bucket(len(self._buckets), params, dtype)
        self._buckets.append(b)
        for i, p in enumerate(params):
            self._where[id(p)] = (b, i)

    # ----- forward -----
    def forward(self, *inputs, **kwargs):
        if self._in_flight:
            raise RuntimeError(
                "Expected to have finished reduction in the prior iteration before starting a new one. This error "
                "indicates that your module has parameters that were not used in producing loss. You can enable "
                "unused parameter detection by passing the keyword argument `find_unused_parameters=True` to "
                "`torch.nn.parallel.DistributedDataParallel`"
            )
        if self.broadcast_buffers and self.require_backward_grad_sync:
            self._sync_buffers()
        out = self.module(*inputs, **kwargs)
        if self.find_unused_parameters and self.require_backward_grad_sync:
            used = _reachable_leaves(out)
            self._unused = [p for p in self._params if id(p) not in used]
            self._marked_unused = False
        return out

    def _sync_buffers(self) -> None:
        from ember.distributed import broadcast

        for b in self.module.buffers():
            broadcast(b, src=self.process_group.ranks[0], group=self.process_group)

    @contextmanager
    def no_sync(self):
        """Skip gradient synchronization inside the block (gradients accumulate locally)."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    # ----- backward -----
    def _grad_ready(self, p) -> None:
        if not self.require_backward_grad_sync:
            return
        if not self._in_flight:
            self._start_iteration()
        b, i = self._where[id(p)]
        self._fill(b, i, p)
        b.pending -= 1
        if b.pending == 0:
            self._launch_ready()
        else:
            self._progress()

    def _start_iteration(self) -> None:
        self._in_flight = True
        self._next_bucket = 0
        self._used_map = np.zeros(len(self._params), np.int32) if self.find_unused_parameters else None
        for b in self._buckets:
            b.pending = len(b.params)
            b.work = None
        if self.find_unused_parameters and not self._marked_unused:
            self._marked_unused = True
            for p in self._unused:
                b, i = self._where[id(p)]
                b.view(i)[...] = 0  # contributes nothing to the average on this rank
                b.pending -= 1
        if self._used_map is not None:
            unused = {id(p) for p in self._unused}
            self._used_map[:] = [0 if id(p) in unused else 1 for p in self._params]

    def _fill(self, b: _Bucket, i: int, p) -> None:
        view = b.view(i)
        g = p._grad
        if g._data is not view and not (g._data.base is b.flat and _same_view(g._data, view)):
            view[...] = g._data
            if self.gradient_as_bucket_view:
                from ember.tensor import _wrap

                bump()  # compiled steps' guards (ember/_mutations.py)
                p._grad = _wrap(view)

    def _launch_ready(self) -> None:
        from ember.distributed.collectives import _all_reduce_unchecked
        from ember.tensor import _wrap

        while self._next_bucket < len(self._buckets) and self._buckets[self._next_bucket].pending == 0:
            b = self._buckets[self._next_bucket]
            b.work = _all_reduce_unchecked(_wrap(b.flat), self.process_group)
            self._next_bucket += 1
        if self._next_bucket == len(self._buckets):
            self._finalize()

    def _progress(self) -> None:
        for b in self._buckets[: self._next_bucket]:
            if b.work is not None and not b.work.is_completed():
                break

    def _finalize(self) -> None:
        """Wait for every bucket, average, and give each parameter its synchronized gradient."""
        from ember.distributed import ReduceOp, all_reduce
        from ember.profiler import record_function
        from ember.tensor import _wrap

        n = self.process_group.size()
        globally_used = None
        with record_function("DistributedDataParallel.wait_allreduce"):
            if self._used_map is not None:
                used = _wrap(self._used_map)
                all_reduce(used, op=ReduceOp.MAX, group=self.process_group)
                globally_used = self._used_map
            for b in self._buckets:
                b.work.wait()
        for b in self._buckets:
            b.flat /= n
        bump()  # .grad rebound below: compiled steps' guards (ember/_mutations.py)
        for k, p in enumerate(self._params):
            b, i = self._where[id(p)]
            if globally_used is not None and not globally_used[k]:
                continue
            view = b.view(i)
            if self.gradient_as_bucket_view:
                if p._grad is None or p._grad._data is not view:
                    from ember.tensor import _wrap as wrap

                    p._grad = wrap(view)
            elif p._grad is None:
                p._grad = _wrap(view.copy())
            else:
                p._grad._data[...] = view
        self._in_flight = False


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape


def _reachable_leaves(out) -> set:
    """ids of the leaf tensors the graph of ``out`` (tensors, nested in lists/tuples/dicts) reaches."""
    from ember.autograd.node import Node
    from ember.tensor import Tensor

    stack, seen, leaves = [], set(), set()
    todo = [out]
    while todo:
        o = todo.pop()
        if isinstance(o, Tensor):
            if o._node is not None:
                stack.append(o._node)
            elif o._requires_grad:
                leaves.add(id(o))
        elif isinstance(o, (list, tuple)):
            todo.extend(o)
        elif isinstance(o, dict):
            todo.extend(o.values())
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for e in node.edges:
            if isinstance(e, Node):
                stack.append(e)
            elif e is not None:
                leaves.add(id(e))
    return leaves


def average_gradients(parameters, group=None) -> None:
    """Average the parameters' gradients over ``group`` in one all-reduce per dtype.

    For loops that DDP's hooks do not fit (pipeline micro-batches, mixed groups). Parameters
    without a gradient count as zeros and keep none.

    Example:
        >>> average_gradients(stage.parameters(), group=mesh.get_group("dp"))  # doctest: +SKIP
    """
    from ember.distributed import ReduceOp, all_reduce
    from ember.tensor import _wrap

    params = [p for p in parameters if p.requires_grad]
    by_dtype: dict = {}
    for p in params:
        by_dtype.setdefault(p._data.dtype.str, []).append(p)
    for ps in by_dtype.values():
        flat = np.concatenate(
            [p._grad._data.reshape(-1) if p._grad is not None else np.zeros(p._data.size, p._data.dtype) for p in ps]
        )
        all_reduce(_wrap(flat), op=ReduceOp.AVG, group=group)
        off = 0
        for p in ps:
            if p._grad is not None:
                p._grad._data[...] = flat[off : off + p._data.size].reshape(p._data.shape)
            off += p._data.size
