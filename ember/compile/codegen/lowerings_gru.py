"""C lowerings of the GRU's and the Elman RNN's (tanh, relu) time loops for programs.

``recurrent_sequence`` of kind ``GRU``/``RNN`` and its gradient, as ``lowerings_rnn.py`` does
the LSTM's, so a training step with these layers stays one native segment. Eager runs them as a
Python loop over NumPy (``nn/functional/rnn.py``: ``_gru_arrays``, ``_rnn_arrays``,
``RecurrentSequence._steps_backward``); here each step is one BLAS GEMM (``h W_hh^T``) and one
loop over the batch's gates, with eager's formulas in eager's order of operations:

- RNN: ``h' = act(gi + (h W^T + b))``; backward ``dpre = (g + carry) * act'``, ``carry = dpre W``;
- GRU: ``gh = h W^T + b``, ``r, z = sigmoid(gi + gh)`` (``tanh(x/2)/2 + 1/2``, as eager),
  ``n = tanh(gi_n + r gh_n)``, ``h' = (1 - z) n + z h``; the forward keeps ``r``, ``z``, ``n`` and
  ``gh_n`` of every step (``ctx.keep``) for the gradient op.

After the time loop the ``W_hh`` gradient is one GEMM over all steps and the ``b_hh`` gradient
one column sum, as eagerly. The hidden state each step started from is the forward's output
shifted by a step (the output node stays live up to the gradient op).

Example:
    >>> from ember.compile.codegen.lowerings_gru import gru_rnn_dims  # see tests/test_compile_gru.py
"""

from __future__ import annotations

from ember.compile.codegen.lowerings import CTYPES
from ember.compile.codegen.lowerings_nn import _gemm, grad_outputs, np_size, recurrence_args

__all__ = ["gru_rnn_dims", "sequence", "sequence_backward"]


def gru_rnn_dims(fwd, ctx):
    """``(T, B, H, G, dtype)`` of a GRU/RNN ``recurrent_sequence`` node these lowerings take, or None."""
    kind = fwd.params.get("kind")
    args = recurrence_args(fwd, ctx) if kind in ("GRU", "RNN") else None
    if args is None:
        return None
    _gi, state, w, b, dt, T, B, G, H = args
    if G != (3 if kind == "GRU" else 1) * H or w.shape[0] != G or state.shape != (B, H):
        return None
    if (b is not None and b.shape != (G,)) or fwd.shape != (T, B, H) or not (T and B and H):
        return None
    return T, B, H, G, dt


def _tanh(dt: str) -> str:
    # float32: mathf.c's branch-free tanh (in every program's prelude), so the gate loop
    # vectorizes; glibc's tanhf is a scalar call (a GRU step's three per element cost more
    # than eager's vectorized np.tanh)
    return "tanh_f32" if dt == "float32" else "tanh"


def sequence(n, ctx):
    """The forward time loop: ``out (T, B, H)``, the hidden state after each step."""
    dims = gru_rnn_dims(n, ctx)
    if dims is None:
        return None
    T, B, H, G, dt = dims
    gi, state, w, b = n.args
    sz, Tc = np_size(dt), CTYPES[dt]
    tanh = _tanh(dt)
    gp, sp, wp, out = ctx.ptr(gi), ctx.ptr(state), ctx.ptr(w), ctx.ptr(n)
    bias = (lambda j: f"{ctx.ptr(b)}[{j}]") if b is not None else (lambda j: f"({Tc})0")
    rev = bool(n.params.get("reverse")) and T > 1
    lines = [
        f"const {Tc} *h = {sp};",
        f"for (int64_t s = 0; s < {T}; s++) {{",
        f"    const int64_t t = {f'{T} - 1 - s' if rev else 's'};",
        f"    {Tc} *o = {out} + t * {B * H};",
        f"    const {Tc} *x = {gp} + t * {B * G};",
    ]
    if n.params["kind"] == "RNN":
        act = "(v < 0 ? 0 : v)" if n.params.get("relu") else f"{tanh}(v)"  # NaN stays NaN
        lines += [
            "    " + _gemm(ctx, dt, 0, 1, B, H, H, 1, "h", H, wp, H, 0, "o", H),
            f"    for (int64_t r = 0; r < {B}; r++)",
            "        #pragma omp simd",
            f"        for (int64_t j = 0; j < {H}; j++) {{",
            f"            const {Tc} v = x[r * {H} + j] + (o[r * {H} + j] + {bias('j')});",
            f"            o[r * {H} + j] = {act};",
            "        }",
            "    h = o;",
            "}",
        ]
        return lines
    gh = f"(({Tc} *){ctx.scratch(B * G * sz)})"
    keep = f"(({Tc} *){ctx.keep(n, 'gru', T * B * 4 * H * sz)})"  # per step: r, z, n, gh_n
    half = f"({Tc})0.5"
    lines[1:1] = [f"{Tc} *gh = {gh}, *kp = {keep};"]
    lines += [
        "    " + _gemm(ctx, dt, 0, 1, B, G, H, 1, "h", H, wp, H, 0, "gh", G),
        f"    {Tc} *k = kp + t * {B * 4 * H};",
        f"    for (int64_t r = 0; r < {B}; r++)",
        "        #pragma omp simd",
        f"        for (int64_t j = 0; j < {H}; j++) {{",
        f"            const {Tc} *xr = x + r * {G}, *gr = gh + r * {G};",
        f"            const {Tc} rg = {tanh}((xr[j] + (gr[j] + {bias('j')})) * {half}) * {half} + {half};",
        f"            const {Tc} zg = {tanh}((xr[{H} + j] + (gr[{H} + j] + {bias(f'{H} + j')})) * {half}) * {half} + {half};",
        f"            const {Tc} hn = gr[{2 * H} + j] + {bias(f'{2 * H} + j')};",
        f"            const {Tc} ng = {tanh}(xr[{2 * H} + j] + rg * hn);",
        f"            o[r * {H} + j] = (1 - zg) * ng + zg * h[r * {H} + j];",
        f"            k[r * {4 * H} + j] = rg; k[r * {4 * H} + {H} + j] = zg;",
        f"            k[r * {4 * H} + {2 * H} + j] = ng; k[r * {4 * H} + {3 * H} + j] = hn;",
        "        }",
        "    h = o;",
        "}",
    ]
    return lines


def sequence_backward(n, fwd, ctx):
    """Backpropagation through time: ``(dgi_all, dstate0, dw_hh, db_hh)``, the ones ``need``
    asks for (``fwd``: the forward node, lowered in this program)."""
    need = n.params.get("need")
    dims = gru_rnn_dims(fwd, ctx)
    if dims is None or need is None or len(need) != 4 or len(n.args) != 4:
        return None
    g, gi, state, w = n.args
    if tuple(fwd.args[:3]) != (gi, state, w) or g.shape != fwd.shape or g.dtype != fwd.dtype:
        return None
    T, B, H, G, dt = dims
    kind = fwd.params["kind"]
    if need[3] and fwd.args[3] is None:
        return None
    kept = ctx.kept(fwd, "gru") if kind == "GRU" else None
    if kind == "GRU" and kept is None:
        return None  # the forward ran eagerly: its node holds what it saved
    sz, Tc = np_size(dt), CTYPES[dt]
    outs = grad_outputs(n, ctx, need)
    dgi = outs[0] or f"(({Tc} *){ctx.scratch(T * B * G * sz)})"
    dgh = f"(({Tc} *){ctx.scratch(T * B * G * sz)})" if kind == "GRU" else "dgi"
    prev = f"(({Tc} *){ctx.scratch(T * B * H * sz)})"
    carry = f"(({Tc} *){ctx.scratch(2 * B * H * sz)})"
    rev = bool(fwd.params.get("reverse")) and T > 1
    out, sp, gp, wp = ctx.ptr(fwd), ctx.ptr(state), ctx.ptr(g), ctx.ptr(w)
    per = B * H
    # prev: the state each step started from (state0, then the outputs shifted by one step)
    first, rest_dst, rest_src = ((T - 1) * per, 0, per) if rev else (0, per, 0)
    lines = [
        f"{Tc} *dgi = {dgi}, *prev = {prev}, *carry = {carry}, *dh = carry + {per};",
        f"{Tc} *dgh = {dgh};",
        f"memcpy(prev + {first}, {sp}, {per} * sizeof({Tc}));",
        f"memcpy(prev + {rest_dst}, {out} + {rest_src}, {(T - 1) * per} * sizeof({Tc}));",
        f"memset(carry, 0, {per} * sizeof({Tc}));",
        f"for (int64_t s = 0; s < {T}; s++) {{",
        f"    const int64_t t = {'s' if rev else f'{T} - 1 - s'};",
        f"    const {Tc} *gt = {gp} + t * {per}, *ht = {out} + t * {per}, *hp = prev + t * {per};",
        f"    {Tc} *di = dgi + t * {B * G}, *dh2 = dgh + t * {B * G};",
        "    (void)ht; (void)hp; (void)dh2;",
    ]
    if kind == "RNN":
        deriv = "(ht[i] > 0)" if fwd.params.get("relu") else "(1 - ht[i] * ht[i])"
        lines += [
            "    #pragma omp simd",
            f"    for (int64_t i = 0; i < {per}; i++) di[i] = (gt[i] + carry[i]) * {deriv};",
            "    " + _gemm(ctx, dt, 0, 0, B, H, H, 1, "di", H, wp, H, 0, "carry", H),
            "}",
        ]
    else:
        lines += [
            f"    const {Tc} *k = (({Tc} *){kept}) + t * {B * 4 * H};",
            f"    for (int64_t r = 0; r < {B}; r++)",
            "        #pragma omp simd",
            f"        for (int64_t j = 0; j < {H}; j++) {{",
            f"            const {Tc} *kr = k + r * {4 * H};",
            f"            const {Tc} rg = kr[j], zg = kr[{H} + j], ng = kr[{2 * H} + j], hn = kr[{3 * H} + j];",
            f"            const {Tc} d2 = gt[r * {H} + j] + carry[r * {H} + j];",
            f"            {Tc} dz = d2 * (hp[r * {H} + j] - ng);",
            f"            const {Tc} dn = d2 * (1 - zg) * (1 - ng * ng);",
            f"            const {Tc} dr = dn * hn * rg * (1 - rg);",
            "            dz = dz * zg * (1 - zg);",
            f"            {Tc} *dir = di + r * {G}, *dhr = dh2 + r * {G};",
            f"            dir[j] = dr; dir[{H} + j] = dz; dir[{2 * H} + j] = dn;",
            f"            dhr[j] = dr; dhr[{H} + j] = dz; dhr[{2 * H} + j] = dn * rg;",
            f"            dh[r * {H} + j] = d2 * zg;",
            "        }",
            "    " + _gemm(ctx, dt, 0, 0, B, H, G, 1, "dh2", G, wp, H, 0, "carry", H),
            f"    for (int64_t i = 0; i < {per}; i++) carry[i] += dh[i];",
            "}",
        ]
    if outs[1] is not None:
        lines.append(f"memcpy({outs[1]}, carry, {per} * sizeof({Tc}));")
    if outs[2] is not None:  # dW_hh = dgh^T h_prev over all steps: one GEMM
        lines.append(_gemm(ctx, dt, 1, 0, G, H, T * B, 1, "dgh", G, "prev", H, 0, outs[2], H))
    if outs[3] is not None:  # db_hh: column sums, rows added in order (as NumPy's sum(0))
        db = outs[3]
        lines += [
            f"for (int64_t c = 0; c < {G}; c++) {db}[c] = 0;",
            f"for (int64_t r = 0; r < {T * B}; r++)",
            "    #pragma omp simd",
            f"    for (int64_t c = 0; c < {G}; c++) {db}[c] += dgh[r * {G} + c];",
        ]
    return lines
