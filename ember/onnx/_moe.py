"""The MoE layer's forward in primitives only, for export.

``MoE.route`` builds per-expert batches with ``scatter``/``index_select`` (and, eagerly, reads
their sizes), ops this exporter does not map to ONNX. While exporting, ``MoE.forward`` calls
:func:`dense_forward` instead: every expert runs on every token and each
output is weighted by the token's gate for that expert, which is zero unless the expert was
chosen and the assignment fit within capacity. It is the same function, including the capacity
rule (priority: all first choices, then second choices, each in token order), with ops that map
to ONNX; capacity is computed from the token count in the graph, so it follows a dynamic batch.
"""

from __future__ import annotations

import ember
from ember.nn.functional.activation import softmax

__all__ = ["dense_forward"]


def dense_forward(moe, x):
    """``moe(x)`` written densely; the routing statistics (``aux_loss`` ...) are not updated."""
    shape = x.shape
    x2 = x.reshape(-1, moe.d_model)
    t, k, n_exp = x2.shape[0], moe.top_k, moe.num_experts
    probs = softmax(moe.router(x2), dim=-1)
    top_vals, top_idx = probs.topk(k, dim=-1)
    gates = top_vals / top_vals.sum(-1, keepdim=True) if moe.normalize_gates else top_vals
    experts = ember.arange(n_exp, dtype=ember.int64)
    chosen = (top_idx.unsqueeze(-1) == experts).to(x.dtype)  # (T, k, E)
    if moe.capacity_factor is not None:
        # Priority order is slot-major: the running count of each expert's assignments in that
        # order is an assignment's place in its expert's queue; it is kept if within capacity.
        flat = chosen.permute(1, 0, 2).reshape(k * t, n_exp)
        place = flat.cumsum(0)
        tokens = ember.ones_like(x2[:, 0], dtype=ember.float64).sum()  # t, as a value in the graph
        cap = (tokens * moe.capacity_factor * k / n_exp).ceil()
        flat = flat * (place <= cap).to(x.dtype)
        chosen = flat.reshape(k, t, n_exp).permute(1, 0, 2)
    weight = (chosen * gates.unsqueeze(-1)).sum(1)  # (T, E): the gate of each expert for each token
    y = None
    for i, e in enumerate(moe.experts.expert_ids):
        part = moe.experts.experts[i](x2) * weight[:, e : e + 1]
        y = part if y is None else y + part
    return y.reshape(shape)
