"""``ZeroRedundancyOptimizer``: optimizer state sharded across data-parallel ranks (ZeRO).

Stage 1 (PyTorch's ``ZeroRedundancyOptimizer``): every parameter is owned by one rank, chosen
greedily (largest first, to the least-loaded rank, as PyTorch). Each rank builds the wrapped
optimizer on its own parameters only, so optimizer state (Adam's two moments: 2x the model) is
divided by the world size. Gradients are expected to be averaged already (by DDP); after the
local step each rank broadcasts the parameters it owns, one flat message per owner.

Stage 2 (``stage=2``, an Ember extension): no DDP. Each parameter group is cut into flat
buckets (``bucket_cap_mb``); during backward, as soon as a bucket's gradients are final, it is
reduce-scattered (averaged) asynchronously, so each rank receives only its slice while the
backward goes on, and the full gradients are released (``_zero2.py``). ``step`` waits for the
buckets, the wrapped optimizer updates the rank's slices, and they are all-gathered back into
the parameters. After backward ``p.grad`` is None: only the shard's gradient is kept.

Example (``ember run -n 2``):
    >>> opt = ZeroRedundancyOptimizer(ddp_model.parameters(), ember.optim.Adam, lr=1e-3)  # doctest: +SKIP
    >>> opt.step()                                                                       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ember.distributed.optim._zero2 import FlatGroup, GradientShards
from ember.optim.optimizer import Optimizer

__all__ = ["ZeroRedundancyOptimizer"]


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap ``optimizer_class`` so each rank keeps the optimizer state of its share only.

    Args:
        params: parameters or parameter groups (the whole model, on every rank).
        optimizer_class: e.g. ``ember.optim.Adam``; built on this rank's share.
        process_group: the data-parallel group (default: the world).
        stage: 1 (optimizer state sharded) or 2 (gradients too: reduce-scattered during
            backward, shard step, all-gather).
        bucket_cap_mb: stage 2: the size of the gradient buckets (as DDP's).
        **defaults: the wrapped optimizer's arguments (``lr=...``).
    """

    def __init__(
        self,
        params,
        optimizer_class: type,
        process_group=None,
        parameters_as_bucket_view: bool = False,
        overlap_with_ddp: bool = False,
        *,
        stage: int = 1,
        bucket_cap_mb: float = 25.0,
        **defaults,
    ):
        from ember.distributed.process_group import _resolve

        if overlap_with_ddp:
            raise NotImplementedError("ZeroRedundancyOptimizer: overlap_with_ddp is not supported in Ember")
        if stage not in (1, 2):
            raise ValueError(f"ZeroRedundancyOptimizer: stage must be 1 or 2, got {stage}")
        super().__init__(params, defaults)
        self.process_group = _resolve(process_group)
        self.stage = stage
        self.optimizer_class = optimizer_class
        self._n = self.process_group.size()
        self._me = self.process_group.rank()
        if stage == 1:
            self._partition = self._partition_parameters()
            local_groups = [
                self._local_group(g, parts[self._me]) for g, parts in zip(self.param_groups, self._partition)
            ]
        else:
            cap = int(bucket_cap_mb * 1024 * 1024)
            self._flat = [FlatGroup(g["params"], self._n, self._me, cap) for g in self.param_groups]
            self._shards = GradientShards(self._flat, self.process_group)
            local_groups = [self._local_group(g, [f.shard_param]) for g, f in zip(self.param_groups, self._flat)]
        self.optim = optimizer_class(local_groups, **defaults)
        for g, lg in zip(self.param_groups, self.optim.param_groups):
            for k, v in lg.items():
                if k != "params":
                    g.setdefault(k, v)

    # ----- partition -----
    def _partition_parameters(self) -> list[list[list]]:
        """Per group, per rank: the parameters that rank owns (PyTorch's greedy rule)."""
        sizes = [0] * self._n
        out = []
        for g in self.param_groups:
            per_rank: list[list] = [[] for _ in range(self._n)]
            for p in sorted(g["params"], key=lambda t: t.numel(), reverse=True):
                r = sizes.index(min(sizes))
                per_rank[r].append(p)
                sizes[r] += p.numel()
            out.append(per_rank)
        return out

    @staticmethod
    def _local_group(group: dict, params: list) -> dict:
        return {**{k: v for k, v in group.items() if k != "params"}, "params": params}

    def _sync_hyperparameters(self) -> None:
        """Copy hyperparameters changed on the global groups (e.g. by an LR scheduler) to the local ones."""
        for g, lg in zip(self.param_groups, self.optim.param_groups):
            for k, v in g.items():
                if k != "params":
                    lg[k] = v

    # ----- the step -----
    def step(self, closure=None):
        """One optimizer step on this rank's share, then every rank gets the updated parameters."""
        loss = self._eval_closure(closure)
        self._sync_hyperparameters()
        if self.stage == 1:
            self.optim.step()
            self._broadcast_owned()
        else:
            self._shards.finish()
            for f in self._flat:
                f.refresh_shard()
            self.optim.step()
            self._shards.all_gather_params()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self.stage == 2:
            self._shards.discard()

    def _broadcast_owned(self) -> None:
        from ember.distributed import broadcast
        from ember.tensor import _wrap

        for owner in range(self._n):
            mine = [p for parts in self._partition for p in parts[owner]]
            for dtype in sorted({p._data.dtype.str for p in mine}):
                group = [p for p in mine if p._data.dtype.str == dtype]
                if owner == self._me:
                    flat = np.concatenate([p._data.reshape(-1) for p in group])
                else:
                    flat = np.empty(sum(p._data.size for p in group), np.dtype(dtype))
                broadcast(_wrap(flat), src=self.process_group.ranks[owner], group=self.process_group)
                if owner != self._me:
                    off = 0
                    for p in group:
                        p._data[...] = flat[off : off + p._data.size].reshape(p._data.shape)
                        off += p._data.size

    # ----- memory and checkpoints -----
    def memory_bytes(self) -> dict[str, int]:
        """Bytes this rank holds: parameters, gradients and optimizer state (measured from the arrays).

        Example:
            >>> opt.memory_bytes()["optimizer_state"]  # doctest: +SKIP
        """
        params = [p for g in self.param_groups for p in g["params"]]
        state = 0
        for st in self.optim.state.values():
            for v in st.values():
                if hasattr(v, "_data"):
                    state += v._data.nbytes
        grads = sum(p._grad._data.nbytes for p in params if p._grad is not None)
        if self.stage == 2:
            grads += sum(f.shard_param._grad._data.nbytes for f in self._flat if f.shard_param._grad is not None)
        return {"params": sum(p._data.nbytes for p in params), "grads": grads, "optimizer_state": state}

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's optimizer state on rank ``to`` (call on all ranks before ``state_dict``)."""
        from ember.distributed import gather_object

        local = self.optim.state_dict()
        mine = {}
        if self.stage == 1:
            index = self._global_index()
            local_params = [p for g in self.optim.param_groups for p in g["params"]]
            for i, p in enumerate(local_params):
                if i in local["state"]:
                    mine[index[id(p)]] = local["state"][i]
        else:
            for gi in range(len(self._flat)):
                if gi in local["state"]:
                    mine[gi] = local["state"][gi]
        got = [None] * self._n if self._me == self.process_group.group_rank(to) else None
        gather_object(mine, got, dst=to, group=self.process_group)
        self._consolidated = self._merge(got) if got is not None else None

    def _global_index(self) -> dict[int, int]:
        index, k = {}, 0
        for g in self.param_groups:
            for p in g["params"]:
                index[id(p)] = k
                k += 1
        return index

    def _merge(self, parts: list[dict]) -> dict:
        if self.stage == 1:
            state = {}
            for part in parts:
                state.update(part)
            return state
        from ember.tensor import _wrap

        state, k = {}, 0
        for gi, f in enumerate(self._flat):
            shards = [part.get(gi, {}) for part in parts]
            keys = list(shards[0].items())
            for j, p in enumerate(f.params):
                entry = {}
                for key, v in keys:
                    if hasattr(v, "_data") and v._data.shape == f.shard_param._data.shape:
                        whole = f.merge([np.asarray(s[key]._data) for s in shards])
                        entry[key] = _wrap(whole[j].reshape(p._data.shape).copy())
                    else:
                        entry[key] = v
                if entry:
                    state[k + j] = entry
            k += len(f.params)
        return state

    def state_dict(self) -> dict:
        """The whole optimizer's state in the wrapped optimizer's format (after ``consolidate_state_dict``)."""
        if getattr(self, "_consolidated", None) is None:
            raise RuntimeError(
                "Optimizer state has not been consolidated on this rank. Please call `consolidate_state_dict(to)` "
                "on all ranks beforehand and call `state_dict()` on the destination rank."
            )
        groups, k = [], 0
        for g in self.param_groups:
            packed = {key: v for key, v in g.items() if key != "params"}
            packed["params"] = list(range(k, k + len(g["params"])))
            k += len(g["params"])
            groups.append(packed)
        return {"state": dict(self._consolidated), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a whole-optimizer state (from ``state_dict`` or an unsharded optimizer): keep this rank's share."""
        from ember.tensor import _wrap

        for g, sg in zip(self.param_groups, state_dict["param_groups"]):
            for key, v in sg.items():
                if key != "params":
                    g[key] = v
        self._sync_hyperparameters()
        full = state_dict["state"]
        local_groups = []
        local_state = {}
        if self.stage == 1:
            index = self._global_index()
            i = 0
            for lg in self.optim.param_groups:
                for p in lg["params"]:
                    if index[id(p)] in full:
                        local_state[i] = full[index[id(p)]]
                    i += 1
        else:
            k = 0
            for gi, f in enumerate(self._flat):
                entries = [full.get(k + j) for j in range(len(f.params))]
                k += len(f.params)
                if not any(entries):
                    continue
                merged = {}
                j0 = next(j for j, e in enumerate(entries) if e)
                for key, v in entries[j0].items():
                    if hasattr(v, "_data") and v._data.size == f.params[j0]._data.size and v._data.ndim:
                        values = {j: np.asarray(e[key]._data) for j, e in enumerate(entries) if e is not None}
                        merged[key] = _wrap(f.cut(values, v._data.dtype))
                    else:
                        merged[key] = v
                local_state[gi] = merged
        for lg in self.optim.state_dict()["param_groups"]:
            local_groups.append(lg)
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
