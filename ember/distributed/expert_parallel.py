"""Expert parallelism: an ``nn.MoE`` whose experts are sharded across the ranks of a group.

Every rank routes its own tokens with the replicated router (capacity per rank and expert, as
GShard), then one differentiable ``all_to_all_single`` sends each kept token row to the rank
that owns its expert (dispatch), the local experts run on what arrived, and a second
``all_to_all_single`` brings the outputs home (combine), where they are weighted by the gates
and summed per token. The backward runs the same two exchanges in reverse. Only the per-expert
counts travel besides the rows (one small all-to-all). Dropped assignments (over capacity) are
counted on each rank (``dropped_tokens``) and across the group (``global_dropped_tokens``).

Example (``ember run -n 2``): 8 experts, 4 per rank
    >>> moe = ExpertParallelMoE.from_moe(ember.nn.MoE(16, 32, num_experts=8))  # doctest: +SKIP
    >>> y = moe(x)                                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy

import numpy as np

import ember.distributed as dist
from ember.distributed.nn.functional import all_to_all_single
from ember.nn.modules.moe import MoE, RoutingPlan
from ember.ops._base import _wrap
from ember.ops.creation import zeros

__all__ = ["ExpertParallelMoE"]


class ExpertParallelMoE(MoE):
    """``MoE`` with experts ``[r * E/n, (r + 1) * E/n)`` on group rank r (construct via :meth:`from_moe`)."""

    @classmethod
    def from_moe(cls, moe: MoE, group=None) -> ExpertParallelMoE:
        """This rank's shard of an unsplit MoE: the router (replicated) and its own experts."""
        n, r = dist.get_world_size(group), dist.get_rank(group)
        if moe.num_experts % n:
            raise ValueError(f"ExpertParallelMoE: {moe.num_experts} experts cannot be split over {n} ranks")
        k = moe.num_experts // n
        m = copy.copy(moe)
        m.__class__ = cls
        m._modules = dict(moe._modules)
        m.router = copy.deepcopy(moe.router)
        experts = copy.deepcopy(moe.experts)
        owned = list(range(r * k, (r + 1) * k))
        local = [experts.experts[experts._local[e]] for e in owned]
        experts.expert_ids = owned
        experts._local = {e: i for i, e in enumerate(owned)}
        from ember.nn.modules.container import ModuleList

        experts.experts = ModuleList(local)
        m.experts = experts
        m.group, m.ep_size, m.experts_per_rank = group, n, k
        m.global_tokens_per_expert = None
        return m

    def route(self, x):
        """Route to every expert (not only the local ones): the plan covers all destinations."""
        local = self.experts.expert_ids
        self.experts.expert_ids = list(range(self.num_experts))
        try:
            return super().route(x)
        finally:
            self.experts.expert_ids = local

    def _exchange_counts(self, plan: RoutingPlan) -> np.ndarray:
        """(n, k) counts: row i = rows rank i sends for each of this rank's k experts."""
        send = np.asarray(plan.tokens_per_expert, np.int64).reshape(self.ep_size, self.experts_per_rank)
        recv = np.empty_like(send)
        dist.all_to_all_single(_wrap(recv), _wrap(np.ascontiguousarray(send)), group=self.group)
        return recv

    def forward(self, x):
        shape = x.shape
        if shape[-1] != self.d_model:
            raise RuntimeError(f"MoE: expected last dimension {self.d_model}, got input of shape {list(shape)}")
        x2 = x.reshape(-1, self.d_model)
        probs, plan = self.route(x2)
        n, k = self.ep_size, self.experts_per_rank
        recv_counts = self._exchange_counts(plan)
        # dispatch: rows for rank j's experts, expert by expert
        order = np.concatenate([plan.token_index[e] for e in range(self.num_experts)]).astype(np.int64)
        send_rows = plan.tokens_per_expert.reshape(n, k).sum(1).tolist()
        recv_rows = recv_counts.sum(1).tolist()
        sent = x2.index_select(0, _wrap(order, x.device))
        arrived = all_to_all_single(recv_rows, send_rows, sent, group=self.group)  # (sum recv, d)
        # regroup the arrived rows by local expert (they come source by source, expert by expert)
        starts = np.cumsum(recv_counts.reshape(-1)) - recv_counts.reshape(-1)
        rows = {}
        for j, e in enumerate(self.experts.expert_ids):
            idx = [np.arange(starts[i * k + j], starts[i * k + j] + recv_counts[i, j]) for i in range(n)]
            rows[e] = np.concatenate(idx).astype(np.int64)
        outputs = self.experts({e: arrived.index_select(0, _wrap(rows[e], x.device)) for e in rows})
        back = zeros((int(sum(recv_rows)), self.d_model), dtype=x2.dtype, device=x2.device)
        for e, y in outputs.items():
            back = back.index_add(0, _wrap(rows[e], x.device), y)
        returned = all_to_all_single(send_rows, recv_rows, back, group=self.group)  # in `order`'s rows
        # combine: weight by the gates and sum per token
        gates = [plan.gate[e] for e in range(self.num_experts) if plan.token_index[e].size]
        y = zeros((x2.shape[0], self.d_model), dtype=x2.dtype, device=x2.device)
        if order.size:
            y = y.index_add(0, _wrap(order, x.device), returned * _cat(gates).unsqueeze(1))
        self.aux_loss = self.load_balancing_loss(probs, plan)
        self.tokens_per_expert = plan.kept
        self.last_plan = plan
        return y.reshape(shape)

    def global_dropped_tokens(self) -> int:
        """Dropped token-expert assignments of the last forward, summed over the group."""
        t = _wrap(np.array([self.dropped_tokens], np.int64))
        dist.all_reduce(t, group=self.group)
        return int(t._data[0])


def _cat(ts):
    import ember

    return ember.cat(ts)
