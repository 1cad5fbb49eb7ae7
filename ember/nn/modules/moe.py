"""Mixture of Experts: a top-k router, capacity-limited dispatch, expert MLPs and a weighted combine.

Routing (Mixtral style): ``probs = softmax(router(x))``; each token picks its ``top_k`` experts
and its gate weights are those probabilities renormalized over the chosen k
(``normalize_gates=False`` keeps the raw probabilities, as Switch Transformer does for k=1).

Capacity: each expert takes at most ``ceil(capacity_factor * tokens * top_k / num_experts)``
assignments (``capacity_factor=None``: unlimited). Assignments are served in priority order, all
first choices before any second choice, then by token position (GShard); the rest are dropped:
they contribute nothing for that expert. ``dropped_tokens`` (dropped token-expert assignments)
and ``tokens_per_expert`` (kept assignments per expert) describe the last forward.

Auxiliary load-balancing loss (Switch / GShard): ``num_experts * sum_i f_i * P_i``, with ``f_i``
the fraction of all token-choice assignments that picked expert i (before capacity) and ``P_i``
the mean router probability of expert i. It is 1.0 for perfectly uniform routing, is
differentiable through ``P``, and is left in ``moe.aux_loss``; add
``moe.aux_loss_coef * moe.aux_loss`` (``moe.weighted_aux_loss()``) to the training loss.

The forward is ``route`` -> ``dispatch`` -> ``experts`` -> ``combine``. ``Experts`` holds only the
experts listed in ``expert_ids``, and ``dispatch``/``combine`` exchange per-expert batches keyed by
expert id, so an expert-parallel version can replace those two steps with all-to-all exchanges
without changing the interface. Everything is vectorized per expert: no loop over tokens.

Routing is tensor ops whose shapes depend only on the token count (GShard's capacity dispatch): a
one-hot of the choices, its running count (each assignment's place in its expert's queue), a
scatter that builds the table of token rows per expert batch, a gather for the batches and one
for the combine. So a capture (``ember.compile``, ``ember.ops.capture``) records it as primitives:
there each expert's batch has its capacity (padding rows are computed, never read back), while an
eager call reads the kept counts once and runs exactly those rows. Every local expert runs, on an
empty batch too, so its parameters always get a gradient (zeros when no token reached it), eager
and compiled alike. Under ``ember.compile`` the statistics (``aux_loss``, ``tokens_per_expert``,
``last_plan``, ``dropped_tokens``) are those of the capture, not of each compiled call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ember._dtype import int64
from ember.nn.functional.activation import softmax
from ember.nn.modules.activation import GELU
from ember.nn.modules.container import ModuleList
from ember.nn.modules.linear import Linear
from ember.nn.modules.module import Module
from ember.ops._base import _wrap
from ember.ops.creation import arange, zeros
from ember.ops.elementwise import where
from ember.ops.movement import cat
from ember.tensor import Tensor

__all__ = ["MoE", "Experts", "ExpertMLP", "RoutingPlan"]


class ExpertMLP(Module):
    """One expert: ``fc2(activation(fc1(x)))``."""

    def __init__(self, d_model: int, d_hidden: int, activation=GELU, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = Linear(d_model, d_hidden, device=device, dtype=dtype)
        self.act = activation() if isinstance(activation, type) else activation
        self.fc2 = Linear(d_hidden, d_model, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Experts(Module):
    """The experts owned by this process: ``expert_ids`` (default: all of ``range(num_experts)``).

    ``forward`` maps ``{expert_id: (n_e, d_model) tokens}`` to ``{expert_id: (n_e, d_model) outputs}``;
    an expert given no tokens still runs (so its parameters get zero gradients, not None).
    """

    def __init__(
        self, num_experts: int, d_model: int, d_hidden: int, activation=GELU, expert_ids=None, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.expert_ids = list(range(num_experts)) if expert_ids is None else [int(e) for e in expert_ids]
        self._local = {e: i for i, e in enumerate(self.expert_ids)}
        self.experts = ModuleList([ExpertMLP(d_model, d_hidden, activation, device, dtype) for _ in self.expert_ids])

    def forward(self, inputs: dict) -> dict:
        return {e: self.experts[self._local[e]](x) for e, x in inputs.items()}


@dataclass
class RoutingPlan:
    """Where each token-expert assignment goes, as tensors (static shapes: a capture can follow it).

    Assignments are flattened in priority order (every token's first choice, then its second ...),
    ``A = top_k * tokens`` of them. The experts' batches are laid end to end: expert ``e`` owns
    rows ``[offsets[e], offsets[e] + sizes[e])`` of the ``rows``-row batch, its kept assignments in
    priority order first, then padding rows (token 0, never read back).
    """

    expert: Tensor  # (A,) int64: the expert of each assignment
    token: Tensor  # (A,) int64: its token row
    gates: Tensor  # (A,) combine weights (differentiable)
    dest: Tensor  # (A,) int64: its row in the experts' batch; ``rows`` (a zero row) if dropped
    table: Tensor  # (rows,) int64: the token row each batch row holds
    sizes: list  # batch rows per expert (capacity under capture, else the kept count)
    requested: Tensor  # (E,) int64: assignments per expert before capacity
    kept: Tensor  # (E,) int64: assignments per expert within capacity
    capacity: int
    expert_ids: list  # the experts this plan's per-expert views (``token_index``, ``gate``) list

    @property
    def rows(self) -> int:
        return sum(self.sizes)

    @property
    def tokens_per_expert(self) -> np.ndarray:
        """Kept assignments per expert (NumPy; reads the values)."""
        return self.kept.numpy()

    @property
    def requested_per_expert(self) -> np.ndarray:
        """Assignments per expert before capacity (NumPy; reads the values)."""
        return self.requested.numpy()

    @property
    def dropped(self) -> int:
        """Assignments over capacity (reads the values)."""
        return int((self.requested.sum() - self.kept.sum()).item())

    @cached_property
    def _kept_assignments(self) -> dict:
        """Expert id -> the indices of its kept assignments, in priority order (NumPy)."""
        expert, dest = self.expert.numpy(), self.dest.numpy()
        return {e: np.flatnonzero((expert == e) & (dest < self.rows)) for e in self.expert_ids}

    @cached_property
    def token_index(self) -> dict:
        """Expert id -> the token rows of its kept assignments, in priority order (NumPy)."""
        token = self.token.numpy()
        return {e: token[sel] for e, sel in self._kept_assignments.items()}

    @cached_property
    def gate(self) -> dict:
        """Expert id -> ``(n_e,)`` combine weights of its kept assignments (differentiable)."""
        return {
            e: self.gates.index_select(0, _wrap(sel.astype(np.int64), self.gates.device))
            for e, sel in self._kept_assignments.items()
        }


class MoE(Module):
    """Top-k routed mixture of expert MLPs with capacity and a load-balancing loss.

    Args:
        d_model: token width. d_hidden: expert MLP hidden width. num_experts: number of experts.
        top_k: experts per token (2). capacity_factor: capacity multiplier (1.25; None = unlimited).
        activation: expert activation (module class or instance, GELU). aux_loss_coef: weight of
        the auxiliary loss (0.01). normalize_gates: renormalize the k gate weights to sum to 1.
        expert_ids: experts held by this module (all by default).

    Example:
        >>> import ember
        >>> moe = ember.nn.MoE(d_model=8, d_hidden=16, num_experts=4, top_k=2)
        >>> y = moe(ember.randn(2, 5, 8))
        >>> y.shape, moe.aux_loss.shape
        (ember.Size([2, 5, 8]), ember.Size([]))
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = 1.25,
        activation=GELU,
        aux_loss_coef: float = 0.01,
        normalize_gates: bool = True,
        expert_ids=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"MoE: top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.d_model = d_model
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.aux_loss_coef = aux_loss_coef
        self.normalize_gates = normalize_gates
        self.router = Linear(d_model, num_experts, bias=False, device=device, dtype=dtype)
        self.experts = Experts(num_experts, d_model, d_hidden, activation, expert_ids, device, dtype)
        self.aux_loss: Tensor | None = None
        self.tokens_per_expert: Tensor | None = None
        self.last_plan: RoutingPlan | None = None

    def capacity(self, num_tokens: int) -> int:
        if self.capacity_factor is None:
            return num_tokens * self.top_k
        return int(math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts))

    def route(self, x: Tensor):
        """Router probabilities ``(T, E)`` and the capacity-limited :class:`RoutingPlan` for ``x`` (T, d).

        Tensor ops only, every shape fixed by ``T`` (none depends on where tokens go), so that a
        capture records the routing as primitives; only the batch sizes of an eager call are read
        (``sizes``: each expert's kept count, so no expert computes padding rows).
        """
        probs = softmax(self.router(x), dim=-1)
        top_vals, top_idx = probs.topk(self.top_k, dim=-1)
        gates = top_vals / top_vals.sum(-1, keepdim=True) if self.normalize_gates else top_vals
        t, k, n_exp = x.shape[0], self.top_k, self.num_experts
        cap, dev = self.capacity(t), x.device
        # Flatten assignments in priority order: every token's first choice, then second, ...
        expert = top_idx.t().reshape(-1)
        token = arange(t, device=dev).repeat(k)
        hot = (expert.unsqueeze(1) == arange(n_exp, device=dev)).long()  # (A, E)
        place = (hot.cumsum(0) * hot).sum(1) - 1  # its place in its expert's queue (GShard)
        requested = hot.sum(0)
        kept = requested.clamp(max=cap)
        if dev.type == "meta":  # captured: every expert gets a batch of its capacity
            sizes = [min(cap, t)] * n_exp
            offsets = arange(n_exp, device=dev) * sizes[0]
        else:  # eager: batches of exactly the kept assignments (one read of E counts)
            sizes = kept.tolist()
            offsets = kept.cumsum(0) - kept
        rows = sum(sizes)
        dest = where(place < cap, offsets.index_select(0, expert) + place, rows)
        table = zeros(rows + 1, dtype=int64, device=dev).scatter(0, dest, token)[:rows]
        plan = RoutingPlan(
            expert,
            token,
            gates.t().reshape(-1),
            dest,
            table,
            sizes,
            requested,
            kept,
            cap,
            list(self.experts.expert_ids),
        )
        return probs, plan

    def dispatch(self, x: Tensor, plan: RoutingPlan) -> dict:
        """Per-expert token batches ``{expert_id: (sizes[e], d) rows of x}`` (padding rows last)."""
        batch = x.index_select(0, plan.table)
        starts = np.cumsum([0] + plan.sizes)
        return {e: batch[starts[e] : starts[e + 1]] for e in plan.expert_ids}

    def combine(self, outputs: dict, plan: RoutingPlan, num_tokens: int, like: Tensor) -> Tensor:
        """Each token's sum of its kept assignments' expert outputs, scaled by their gates."""
        d = self.d_model
        pieces = []
        for e, size in enumerate(plan.sizes):
            if e in outputs:
                pieces.append(outputs[e])
            elif size:  # an expert held elsewhere: contributes nothing here
                pieces.append(zeros((size, d), dtype=like.dtype, device=like.device))
        pieces.append(zeros((1, d), dtype=like.dtype, device=like.device))  # a dropped assignment's row
        picked = cat(pieces).index_select(0, plan.dest) * plan.gates.unsqueeze(1)  # (A, d)
        return picked.reshape(self.top_k, num_tokens, d).sum(0)

    def load_balancing_loss(self, probs: Tensor, plan: RoutingPlan) -> Tensor:
        """``num_experts * sum_i f_i * P_i`` (f from all top-k choices before capacity)."""
        total = max(probs.shape[0] * self.top_k, 1)
        f = (plan.requested.double() / total).to(probs.dtype)
        return (f * probs.mean(0)).sum() * self.num_experts

    @property
    def dropped_tokens(self) -> int:
        """Token-expert assignments of the last forward over capacity (reads the counts)."""
        if self.last_plan is None:
            return 0
        if self.last_plan.kept.device.type == "meta":
            raise RuntimeError(
                "MoE.dropped_tokens: the last forward ran on meta tensors (the meta device, or a capture by "
                "ember.compile, whose calls do not update the routing statistics): run it eagerly to read them"
            )
        return self.last_plan.dropped

    def weighted_aux_loss(self) -> Tensor:
        """``aux_loss_coef * aux_loss`` of the last forward, to add to the training loss."""
        return self.aux_loss * self.aux_loss_coef

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        if shape[-1] != self.d_model:
            raise RuntimeError(f"MoE: expected last dimension {self.d_model}, got input of shape {list(shape)}")
        from ember.onnx._state import is_in_onnx_export

        if is_in_onnx_export():  # routing reads values; export runs the same function densely
            from ember.onnx._moe import dense_forward

            return dense_forward(self, x)
        x2 = x.reshape(-1, self.d_model)
        probs, plan = self.route(x2)
        outputs = self.experts(self.dispatch(x2, plan))
        y = self.combine(outputs, plan, x2.shape[0], x2)
        self.aux_loss = self.load_balancing_loss(probs, plan)
        self.tokens_per_expert = plan.kept
        self.last_plan = plan
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"capacity_factor={self.capacity_factor}"
        )
