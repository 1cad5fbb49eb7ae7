"""The unsplit model (and optimizer state) of a tensor-, pipeline- or expert-parallel run.

A :class:`ShardPlan` says, for every parameter and buffer of the unsplit model (by its name in
``named_parameters()`` / ``named_buffers()``), which tensor of this rank holds it and how the
ranks' pieces fit together:

* :class:`Replicated`: every rank holds all of it (LayerNorms under TP, the router under EP);
* :class:`Split`: rank r holds the r-th of n equal slices along ``dim`` (TP); with ``chunks``
  > 1 each of that many blocks is sliced (q, k and v packed in one weight);
* :class:`Owned`: one rank holds it (a pipeline stage's layers, an expert).

:meth:`ShardPlan.gather_model` writes the unsplit values into the unsplit module on every rank
(for evaluation and checkpoints); :meth:`ShardPlan.gather_optimizer_state` builds, on one rank,
the state_dict an optimizer of the unsplit model would have, so a sharded run's checkpoint loads
and resumes in a single process; :meth:`ShardPlan.cut_optimizer_state` goes the other way.
Each rank sends only the pieces it leads (a replicated tensor once, from rank 0).

Example (``ember run -n 2``, tensor parallel):
    >>> plan = ShardPlan()                                                    # doctest: +SKIP
    >>> plan.add("transformer.wte.weight", tp_model.wte.weight, Split(0))     # doctest: +SKIP
    >>> plan.gather_model(gpt)  # gpt.transformer.wte.weight: the whole table  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ember
import ember.distributed as dist

__all__ = ["Replicated", "Split", "Owned", "ShardPlan"]


@dataclass(frozen=True)
class Replicated:
    """Every rank holds the whole tensor; rank 0's copy is the one gathered."""

    def lead(self) -> int:
        return 0

    def leads(self, rank: int) -> bool:
        return rank == 0

    def assemble(self, pieces: list) -> np.ndarray:
        return pieces[0]

    def cut(self, full: np.ndarray, rank: int, n: int) -> np.ndarray:
        return full


@dataclass(frozen=True)
class Split:
    """Rank r of n holds slice r along ``dim`` (of each of ``chunks`` equal blocks). ``size``: the
    unsplit length along ``dim`` when the slices carry zero padding at the end (a padded vocabulary)."""

    dim: int
    chunks: int = 1
    size: int | None = None

    def lead(self) -> int:
        return 0

    def leads(self, rank: int) -> bool:
        return True

    def assemble(self, pieces: list) -> np.ndarray:
        parts = [np.split(p, self.chunks, axis=self.dim) for p in pieces]
        full = np.concatenate([part[c] for c in range(self.chunks) for part in parts], axis=self.dim)
        return full if self.size is None else np.take(full, np.arange(self.size), axis=self.dim)

    def cut(self, full: np.ndarray, rank: int, n: int) -> np.ndarray:
        if self.size is not None:  # pad to a length the ranks divide
            pad = [(0, 0)] * full.ndim
            pad[self.dim] = (0, -(-self.size // n) * n - self.size)
            full = np.pad(full, pad)
        blocks = np.split(full, self.chunks, axis=self.dim)
        return np.concatenate([np.split(b, n, axis=self.dim)[rank] for b in blocks], axis=self.dim)


@dataclass(frozen=True)
class Owned:
    """Group rank ``rank`` alone holds the tensor."""

    rank: int

    def lead(self) -> int:
        return self.rank

    def leads(self, rank: int) -> bool:
        return rank == self.rank

    def assemble(self, pieces: list) -> np.ndarray:
        return pieces[self.rank]

    def cut(self, full: np.ndarray, rank: int, n: int) -> np.ndarray:
        return full


class ShardPlan:
    """How the unsplit model's tensors are spread over the ranks of ``group`` (see the module doc)."""

    def __init__(self, group=None):
        self.group = group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)
        self.entries: dict[str, tuple] = {}  # unsplit name -> (this rank's tensor or None, layout)

    def add(self, name: str, local, layout) -> None:
        """``local``: this rank's tensor for ``name`` (None where the rank holds none of it)."""
        if local is None and (not isinstance(layout, Owned) or layout.rank == self.rank):
            raise ValueError(f"ShardPlan: rank {self.rank} must hold a piece of '{name}' ({layout})")
        self.entries[name] = (local, layout)

    def _mine(self, value) -> dict:
        return {
            name: value(local)
            for name, (local, layout) in self.entries.items()
            if local is not None and layout.leads(self.rank)
        }

    # ----------------------------------------------------------------- weights
    def gather_model(self, module) -> None:
        """Write the unsplit values into ``module`` (the unsplit model) on every rank."""
        everyone: list = [None] * self.size
        dist.all_gather_object(everyone, self._mine(lambda t: t.detach().numpy()), group=self.group)
        targets = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        missing = set(targets) - set(self.entries)
        if missing:
            raise ValueError(f"ShardPlan: no entry for {', '.join(sorted(missing))}")
        for name, (_, layout) in self.entries.items():
            full = layout.assemble([everyone[r].get(name) for r in range(self.size)])
            t = targets[name]
            if tuple(full.shape) != tuple(t.shape):
                raise ValueError(f"ShardPlan: '{name}' gathers to {list(full.shape)}, expected {list(t.shape)}")
            t._data[...] = full

    # ----------------------------------------------------------------- optimizer state
    def gather_optimizer_state(self, optimizer, module, full_optimizer, dst: int = 0) -> dict | None:
        """On ``dst``: ``full_optimizer``'s state_dict filled with the unsplit state of ``optimizer``
        (the sharded model's) and its hyperparameters (learning rates as the scheduler left them).
        ``full_optimizer`` is built the same way over ``module`` (the unsplit model), so its
        groups match. None
        elsewhere. Every rank calls it."""

        def piece(t):
            st = optimizer.state.get(t)
            if not st:
                return None
            return {"shape": list(t.shape), "state": {k: _to_numpy(v) for k, v in st.items()}}

        gathered = [None] * self.size if self.rank == dst else None
        dist.gather_object(self._mine(piece), gathered, dst=dst, group=self.group)
        if self.rank != dst:
            return None
        params = dict(module.named_parameters())
        for name, (_, layout) in self.entries.items():
            if name not in params:  # a buffer, or a parameter this optimizer does not train
                continue
            pieces = [gathered[r].get(name) for r in range(self.size)]
            lead = pieces[layout.lead()]
            if lead is None:  # no step taken yet
                continue
            state = {}
            for key, v in lead["state"].items():
                if isinstance(v, np.ndarray) and list(v.shape) == lead["shape"]:  # shaped like the parameter
                    v = layout.assemble([p["state"][key] if p else None for p in pieces])
                state[key] = ember.tensor(v) if isinstance(v, np.ndarray) else v
            full_optimizer.state[params[name]] = state
        for full_group, group in zip(full_optimizer.param_groups, optimizer.param_groups):
            full_group.update({k: v for k, v in group.items() if k != "params"})
        return full_optimizer.state_dict()

    def cut_optimizer_state(self, full_state: dict, module, full_optimizer, optimizer) -> dict:
        """``optimizer``'s (the sharded model's) state_dict cut from ``full_state``, a state_dict of
        ``full_optimizer`` (built the same way over ``module``, the unsplit model): resuming in
        parallel."""
        index = {}
        for i, p in enumerate(p for g in full_optimizer.param_groups for p in g["params"]):
            index.setdefault(id(p), i)
        local_index = {}
        for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
            local_index.setdefault(id(p), i)
        names = dict(module.named_parameters())
        state = {}
        for name, (local, layout) in self.entries.items():
            if local is None or name not in names or id(local) not in local_index:
                continue
            saved = full_state["state"].get(index[id(names[name])])
            if saved is None:
                continue
            full_shape = tuple(names[name].shape)
            state[local_index[id(local)]] = {
                k: (
                    ember.tensor(layout.cut(v.numpy(), self.rank, self.size))
                    if isinstance(v, ember.Tensor) and tuple(v.shape) == full_shape and v.dim() > 0
                    else v
                )
                for k, v in saved.items()
            }
        groups = []
        for saved, group in zip(full_state["param_groups"], optimizer.state_dict()["param_groups"]):
            groups.append({**saved, "params": group["params"]})
        return {"state": state, "param_groups": groups}


def _to_numpy(v):
    if isinstance(v, ember.Tensor):
        return np.array(v.detach().numpy(), copy=True)
    return v
