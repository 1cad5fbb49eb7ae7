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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.nn.functional.activation import softmax
from ember.nn.modules.activation import GELU
from ember.nn.modules.container import ModuleList
from ember.nn.modules.linear import Linear
from ember.nn.modules.module import Module
from ember.ops._base import _wrap
from ember.ops.creation import zeros
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

    ``forward`` maps ``{expert_id: (n_e, d_model) tokens}`` to ``{expert_id: (n_e, d_model) outputs}``.
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
        return {e: self.experts[self._local[e]](x) for e, x in inputs.items() if x.shape[0] > 0}


@dataclass
class RoutingPlan:
    """Where each kept token-expert assignment goes (arrays are NumPy, gates are differentiable)."""

    token_index: dict  # expert id -> int64 array of token rows sent to it
    gate: dict  # expert id -> (n_e,) Tensor of combine weights
    tokens_per_expert: np.ndarray  # kept assignments per expert
    requested_per_expert: np.ndarray  # assignments per expert before capacity
    dropped: int  # assignments over capacity
    capacity: int


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
        self.dropped_tokens = 0
        self.tokens_per_expert: Tensor | None = None
        self.last_plan: RoutingPlan | None = None

    def capacity(self, num_tokens: int) -> int:
        if self.capacity_factor is None:
            return num_tokens * self.top_k
        return int(math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts))

    def route(self, x: Tensor):
        """Router probabilities ``(T, E)`` and the capacity-limited :class:`RoutingPlan` for ``x`` (T, d)."""
        probs = softmax(self.router(x), dim=-1)
        top_vals, top_idx = probs.topk(self.top_k, dim=-1)
        gates = top_vals / top_vals.sum(-1, keepdim=True) if self.normalize_gates else top_vals
        t, k, n_exp = x.shape[0], self.top_k, self.num_experts
        cap = self.capacity(t)
        # Flatten assignments in priority order: every token's first choice, then second, ...
        flat_e = top_idx._data.T.reshape(-1)
        flat_tok = np.tile(np.arange(t), k)
        flat_slot = np.repeat(np.arange(k), t)
        order = np.argsort(flat_e, kind="stable")  # grouped by expert, priority kept inside a group
        counts = np.bincount(flat_e, minlength=n_exp)
        starts = np.cumsum(counts) - counts
        kept = np.minimum(counts, cap)
        gates_flat = gates.reshape(-1)
        token_index, gate = {}, {}
        for e in self.experts.expert_ids:
            sel = order[starts[e] : starts[e] + kept[e]]
            token_index[e] = flat_tok[sel]
            gate[e] = gates_flat.index_select(0, _wrap(flat_tok[sel] * k + flat_slot[sel], x.device))
        plan = RoutingPlan(token_index, gate, kept, counts, int(counts.sum() - kept.sum()), cap)
        return probs, plan

    def dispatch(self, x: Tensor, plan: RoutingPlan) -> dict:
        """Per-expert token batches ``{expert_id: x[token_index]}``."""
        return {e: x.index_select(0, _wrap(idx, x.device)) for e, idx in plan.token_index.items()}

    def combine(self, outputs: dict, plan: RoutingPlan, num_tokens: int, like: Tensor) -> Tensor:
        """Scatter-add each expert's outputs, scaled by their gates, back to token rows."""
        out = zeros((num_tokens, self.d_model), dtype=like.dtype, device=like.device)
        for e, y in outputs.items():
            out = out.index_add(0, _wrap(plan.token_index[e], like.device), y * plan.gate[e].unsqueeze(1))
        return out

    def load_balancing_loss(self, probs: Tensor, plan: RoutingPlan) -> Tensor:
        """``num_experts * sum_i f_i * P_i`` (f from all top-k choices before capacity)."""
        total = max(int(plan.requested_per_expert.sum()), 1)
        f = _wrap((plan.requested_per_expert / total).astype(probs._data.dtype), probs.device)
        return (f * probs.mean(0)).sum() * self.num_experts

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
        self.dropped_tokens = plan.dropped
        self.tokens_per_expert = _wrap(plan.tokens_per_expert.astype(np.int64), x.device)
        self.last_plan = plan
        return y.reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"capacity_factor={self.capacity_factor}"
        )
