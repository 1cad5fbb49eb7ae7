"""C lowerings of the LSTM's time loops (``recurrent_sequence`` and its gradient) for programs.

The eager kernels (``nn/functional/rnn.py``) run a whole LSTM direction as one C call; here the
program calls the same hand kernels (``ctx.ext``), so a training step with an LSTM stays one
native segment:

- where the hand kernels are built for AVX-512 (``ops.has_gemm``, as eager decides): gemm.c's
  ``lstm_seq_fwd``/``lstm_seq_bwd`` (the GEMM of each step on the register tiles over a packed
  ``W_hh``, packed per call by ``gemm_pack_b``);
- elsewhere: the time loop in the program, per step one BLAS GEMM and the fused pointwise
  ``lstm_fwd_step``/``lstm_bwd_step`` (eager's loop with the C step kernels).

The forward keeps the gate activations and ``tanh(c)`` of every step (``ctx.keep``) for the
gradient op, which reads them (``ctx.kept``) instead of the autograd node: a program's gradient
op lowers only when its forward op was lowered in the same program. After the time loop the
``W_hh`` gradient is one GEMM over all steps and the ``b_hh`` gradient one column sum, as eagerly.

Example:
    >>> from ember.compile.codegen.lowerings_rnn import RNN_LOWERINGS
    >>> sorted(RNN_LOWERINGS)
    ['recurrent_sequence', 'recurrent_sequence_backward']
"""

from __future__ import annotations

from ember.compile.codegen import lowerings_gru as gru
from ember.compile.codegen.lowerings import CTYPES
from ember.compile.codegen.lowerings_nn import _gemm, _noderef, grad_outputs, np_size, recurrence_args

__all__ = ["RNN_LOWERINGS", "packed_loops"]


def packed_loops(dt: str) -> bool:
    """Whether the LSTM loops run as gemm.c's whole-sequence kernels (eager's condition)."""
    import numpy as np

    from ember.backends.ckernels import ops

    return ops.has_gemm(np.dtype(dt))


def _dims(fwd, ctx):
    """``(T, B, H, dtype)`` of an LSTM ``recurrent_sequence`` node this lowering takes, or None."""
    args = recurrence_args(fwd, ctx) if fwd.params.get("kind") == "LSTM" else None
    if args is None:
        return None
    _gi, state, w, b, dt, T, B, G, H = args
    if G != 4 * H or w.shape[0] != G or state.shape != (B, 2 * H) or (b is not None and b.shape != (G,)):
        return None
    if fwd.shape != (T, B, 2 * H) or not (T and B and H):
        return None
    return T, B, H, dt


def _gnr(dt: str) -> int:
    return 128 // np_size(dt)  # gemm.c's GNR: columns of a packed panel (two 64-byte vectors)


def _threads(ctx, B, H) -> int:
    from ember.backends.ckernels.ops import PARALLEL_MIN

    return ctx.threads(B * 4 * H * H // 64, PARALLEL_MIN)  # as ops.lstm_sequence_forward


def _sequence(n, ctx):
    """The forward time loop: ``out (T, B, 2H)`` of ``[h | c]`` per step (GRU/RNN: ``lowerings_gru.py``)."""
    if n.params.get("kind") in ("GRU", "RNN"):
        return gru.sequence(n, ctx)
    dims = _dims(n, ctx)
    if dims is None:
        return None
    T, B, H, dt = dims
    gi, state, w, b = n.args
    sfx, sz, Tc = ("f32" if dt == "float32" else "f64"), np_size(dt), CTYPES[dt]
    act = f"(({Tc} *){ctx.keep(n, 'act', T * B * 4 * H * sz)})"
    tc = f"(({Tc} *){ctx.keep(n, 'tc', T * B * H * sz)})"
    hh = f"(({Tc} *){ctx.scratch(B * 4 * H * sz)})"
    gp, sp, wp, out = ctx.ptr(gi), ctx.ptr(state), ctx.ptr(w), ctx.ptr(n)
    bp = ctx.ptr(b) if b is not None else "NULL"
    rev = int(bool(n.params.get("reverse")) and T > 1)
    if packed_loops(dt):
        gnr = _gnr(dt)
        packed = f"(({Tc} *){ctx.scratch(-(-4 * H // gnr) * gnr * H * sz)})"
        return [
            f"{Tc} *wp = {packed};",  # W_hh^T (H x 4H): element (k, j) at w[j * H + k]
            f"{ctx.ext('gemm_pack_b_' + sfx)}({wp}, 1, {H}, {H}, {4 * H}, wp);",
            f"{ctx.ext('lstm_seq_fwd_' + sfx)}({gp}, {bp}, wp, {sp}, {2 * H}, {act}, {out}, {tc}, {hh}, "
            f"{T}, {B}, {H}, {rev}, {_threads(ctx, B, H)});",
        ]
    step = ctx.ext("lstm_fwd_step_" + sfx)
    return [
        f"const {Tc} *h = {sp};",
        f"{Tc} *hh = {hh}, *act = {act}, *tc = {tc};",
        f"for (int64_t s = 0; s < {T}; s++) {{",
        f"    const int64_t t = {f'{T} - 1 - s' if rev else 's'};",
        "    " + _gemm(ctx, dt, 0, 1, B, 4 * H, H, 1, "h", 2 * H, wp, H, 0, "hh", 4 * H),
        f"    {Tc} *o = {out} + t * {B * 2 * H};",
        f"    {step}({gp} + t * {B * 4 * H}, {bp}, hh, h + {H}, {2 * H}, act + t * {B * 4 * H}, o, "
        f"tc + t * {B * H}, {B}, {H});",
        "    h = o;",
        "}",
    ]


def _sequence_backward(n, ctx):
    """Backpropagation through time from the forward's kept activations: ``(dgi_all, dstate0,
    dw_hh, db_hh)``, the ones ``need`` asks for."""
    fwd = _noderef(n.params.get("node"), "recurrent_sequence")
    if fwd is not None and fwd.params.get("kind") in ("GRU", "RNN"):
        return gru.sequence_backward(n, fwd, ctx)
    need = n.params.get("need")
    if fwd is None or need is None or len(need) != 4 or len(n.args) != 4:
        return None
    dims = _dims(fwd, ctx)
    g, gi, state, w = n.args
    if dims is None or tuple(fwd.args[:3]) != (gi, state, w) or g.shape != fwd.shape or g.dtype != fwd.dtype:
        return None
    T, B, H, dt = dims
    if need[3] and fwd.args[3] is None:
        return None
    act, tc = ctx.kept(fwd, "act"), ctx.kept(fwd, "tc")
    if act is None or tc is None:
        return None  # the forward ran eagerly: its node holds what it saved
    sfx, sz, Tc = ("f32" if dt == "float32" else "f64"), np_size(dt), CTYPES[dt]
    outs = grad_outputs(n, ctx, need)
    dg = outs[0] or f"(({Tc} *){ctx.scratch(T * B * 4 * H * sz)})"
    prev = f"(({Tc} *){ctx.scratch(T * B * 2 * H * sz)})"
    carry = f"(({Tc} *){ctx.scratch(2 * B * H * sz)})"
    rev = int(bool(fwd.params.get("reverse")) and T > 1)
    out, sp, gp, wp = ctx.ptr(fwd), ctx.ptr(state), ctx.ptr(g), ctx.ptr(w)
    per_step = B * 2 * H
    # prev: the state each step started from (state0, then the outputs shifted by one step)
    first, rest_dst, rest_src = ((T - 1) * per_step, 0, per_step) if rev else (0, per_step, 0)
    lines = [
        f"{Tc} *dg = {dg}, *prev = {prev}, *carry_h = {carry}, *carry_c = carry_h + {B * H};",
        f"{Tc} *act = (({Tc} *){act}), *tc = (({Tc} *){tc});",
        f"memcpy(prev + {first}, {sp}, {per_step} * sizeof({Tc}));",
        f"memcpy(prev + {rest_dst}, {out} + {rest_src}, {(T - 1) * per_step} * sizeof({Tc}));",
        f"memset(carry_h, 0, {2 * B * H} * sizeof({Tc}));",
    ]
    if packed_loops(dt):
        gnr = _gnr(dt)
        packed = f"(({Tc} *){ctx.scratch(-(-H // gnr) * gnr * 4 * H * sz)})"
        lines += [
            f"{Tc} *wp = {packed};",  # W_hh (4H x H)
            f"{ctx.ext('gemm_pack_b_' + sfx)}({wp}, {H}, 1, {4 * H}, {H}, wp);",
            f"{ctx.ext('lstm_seq_bwd_' + sfx)}(act, prev, tc, {gp}, wp, carry_h, carry_c, dg, {T}, {B}, {H}, "
            f"{rev}, {_threads(ctx, B, H)});",
        ]
    else:
        step = ctx.ext("lstm_bwd_step_" + sfx)
        lines += [
            f"for (int64_t s = 0; s < {T}; s++) {{",
            f"    const int64_t t = {'s' if rev else f'{T} - 1 - s'};",
            f"    {step}(act + t * {B * 4 * H}, prev + t * {B * 2 * H} + {H}, {2 * H}, tc + t * {B * H}, "
            f"{gp} + t * {B * 2 * H}, carry_h, carry_c, dg + t * {B * 4 * H}, {B}, {H});",
            "    " + _gemm(ctx, dt, 0, 0, B, H, 4 * H, 1, f"dg + t * {B * 4 * H}", 4 * H, wp, H, 0, "carry_h", H),
            "}",
        ]
    if outs[1] is not None:  # [carry_h | carry_c] row by row
        lines.append(
            f"for (int64_t r = 0; r < {B}; r++) {{ memcpy({outs[1]} + r * {2 * H}, carry_h + r * {H}, "
            f"{H} * sizeof({Tc})); memcpy({outs[1]} + r * {2 * H} + {H}, carry_c + r * {H}, {H} * sizeof({Tc})); }}"
        )
    if outs[2] is not None:  # dW_hh = dgates^T h_prev over all steps: one GEMM
        lines.append(_gemm(ctx, dt, 1, 0, 4 * H, H, T * B, 1, "dg", 4 * H, "prev", 2 * H, 0, outs[2], H))
    if outs[3] is not None:  # db_hh: column sums, rows added in order (as NumPy's sum(0))
        db = outs[3]
        lines += [
            f"for (int64_t c = 0; c < {4 * H}; c++) {db}[c] = 0;",
            f"for (int64_t r = 0; r < {T * B}; r++)",
            "    #pragma omp simd",
            f"    for (int64_t c = 0; c < {4 * H}; c++) {db}[c] += dg[r * {4 * H} + c];",
        ]
    return lines


RNN_LOWERINGS = {"recurrent_sequence": _sequence, "recurrent_sequence_backward": _sequence_backward}
