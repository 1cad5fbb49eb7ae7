"""C lowerings of layers, losses, attention and the optimizer update (see ``lowerings.py``).

GEMMs go through the BLAS gemm pointer (``ctx.gemm``), row kernels through ``backends/ckernels``
(``ctx.ext``). Gradient ops of a captured step that read their autograd node (``compile/step.py``'s
``NodeRef``) recompute what the node saved from the forward op's inputs, so nothing is read
from the node.

Example:
    >>> from ember.compile.codegen.lowerings_nn import NN_LOWERINGS
    >>> sorted(NN_LOWERINGS)[:2]
    ['_foreach_add_', '_fused_adam_']
"""

from __future__ import annotations

from ember.compile.codegen.lowerings import _FLOAT, _R, CTYPES, Inplace, _numel, dname

__all__ = ["NN_LOWERINGS", "np_size", "recurrence_args", "grad_outputs"]


def _gemm(ctx, dt, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc) -> str:
    fn = ctx.gemm(dt)
    return f"{fn}(101, {112 if ta else 111}, {112 if tb else 111}, {M}, {N}, {K}, {alpha}, {a}, {lda}, {b}, {ldb}, {beta}, {c}, {ldc});"


def _small_ok(dt, M, N, K) -> bool:
    """Whether an attention head's product runs on gemm.c's ``gemm_small`` (no packing, no BLAS
    call overhead: about twice OpenBLAS's speed at 64 x 64 x 32): at most ``GEMM_MIN``
    multiply-adds (larger ones go through the GEMM pointers), ``N`` a multiple of the 64-byte
    vector, where the tiles run (``blas.tiles_active``, so ``blas.tiles(False)`` renders BLAS)."""
    from ember.backends.ckernels.ops import GEMM_MIN
    from ember.compile.codegen import blas

    return 0 < M * N * K <= GEMM_MIN and N % (64 // np_size(dt)) == 0 and blas.tiles_active()


def _mm(ctx, dt, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, bt: str) -> str:
    """``_gemm``'s product (row-major, ``beta`` 0 or 1) through ``gemm_small`` where
    :func:`_small_ok`, a transposed ``b`` first copied into the scratch ``bt`` (K x N), else
    through ``_gemm``."""
    if not _small_ok(dt, M, N, K):
        return _gemm(ctx, dt, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc)
    pre = ""
    if tb:  # b is (N x K) row-major: bt = b^T
        pre = f"for (int64_t n_ = 0; n_ < {N}; n_++) for (int64_t k_ = 0; k_ < {K}; k_++) {bt}[k_ * {N} + n_] = ({b})[n_ * {ldb} + k_]; "
        b, ldb = bt, N
    rsa, csa = (1, lda) if ta else (lda, 1)
    fn = ctx.ext(f"gemm_small_{'f32' if dt == 'float32' else 'f64'}")
    return pre + f"{fn}({M}, {N}, {K}, {alpha}, {a}, {rsa}, {csa}, {b}, {ldb}, {int(bool(beta))}, {c}, {ldc});"


def _linear(n, ctx):
    x, w, b = n.args
    dt = dname(n)
    if dt not in _FLOAT or ctx.gemm(dt) is None or len(w.shape) != 2 or not x.shape:
        return None
    if any(t is not None and t.dtype != n.dtype for t in (x, w, b)) or (b is not None and b.shape != w.shape[:1]):
        return None
    K, N = w.shape[1], w.shape[0]
    M = _numel(x.shape) // K if K else _numel(x.shape[:-1])
    y = ctx.ptr(n)
    lines = []
    if b is not None:
        lines.append(
            f"for (int64_t r = 0; r < {M}; r++) memcpy({y} + r * {N}, {ctx.ptr(b)}, {N} * sizeof({ctx.ctype(n)}));"
        )
    elif K == 0:
        lines.append(f"memset({y}, 0, {M * N} * sizeof({ctx.ctype(n)}));")
    if M and N and K:
        lines.append(_gemm(ctx, dt, 0, 1, M, N, K, 1, ctx.ptr(x), K, ctx.ptr(w), K, 0 if b is None else 1, y, N))
    return lines


def _linear_backward(n, ctx):
    g, x, w = n.args
    need = n.params["need"]
    dt = dname(g)
    if dt not in _FLOAT or ctx.gemm(dt) is None or len(w.shape) != 2 or any(t.dtype != g.dtype for t in (x, w)):
        return None
    K, N = w.shape[1], w.shape[0]
    M = _numel(g.shape) // N if N else 0
    if not (M and N and K):
        return None
    items, T = ctx.items(n), CTYPES[dt]
    outs, k = [], 0
    for flag, nbytes in zip(need, (M * K, N * K, N)):
        if not flag:
            continue
        item = items.get(k)
        outs.append(
            ctx.ptr(item) if item is not None else f"(({T} *){ctx.scratch(nbytes * (4 if T == 'float' else 8))})"
        )
        k += 1
    lines, k = [], 0
    gp, xp, wp = ctx.ptr(g), ctx.ptr(x), ctx.ptr(w)
    if need[0]:
        lines.append(_gemm(ctx, dt, 0, 0, M, K, N, 1, gp, N, wp, K, 0, outs[k], K))
        k += 1
    if need[1]:
        lines.append(_gemm(ctx, dt, 1, 0, N, K, M, 1, gp, N, xp, K, 0, outs[k], K))
        k += 1
    if need[2]:
        gb = outs[k]
        lines += [
            f"for (int64_t c = 0; c < {N}; c++) {gb}[c] = 0;",
            f"for (int64_t r = 0; r < {M}; r++)",
            "    #pragma omp simd",
            f"    for (int64_t c = 0; c < {N}; c++) {gb}[c] += {gp}[r * {N} + c];",
        ]
    return lines


def _layer_norm(n, ctx):
    x, w, b = n.args[0], n.args[1], n.args[2]
    dt = dname(n)
    axes = n.params.get("axes")
    if dt not in _FLOAT or x.dtype != n.dtype or any(t is not None and t.dtype != n.dtype for t in (w, b)):
        return None
    nd = len(x.shape)
    k = len(axes)
    if sorted(a % nd for a in axes) != list(range(nd - k, nd)):
        return None
    cols = _numel(x.shape[nd - k :])
    rows = _numel(x.shape) // cols if cols else 0
    if not rows:
        return []
    sz = 4 if dt == "float32" else 8
    T = ctx.ctype(n)
    fn = ctx.ext(f"layer_norm_fwd_{'f32' if sz == 4 else 'f64'}")
    wp = ctx.ptr(w) if w is not None else "NULL"
    bp = ctx.ptr(b) if b is not None else "NULL"
    if ctx.node_readers(n):  # its gradient op in this program reads the statistics, as eagerly
        mean, rstd = ctx.keep(n, "mean", rows * sz), ctx.keep(n, "rstd", rows * sz)
    else:
        mean, rstd = ctx.scratch(rows * sz), ctx.scratch(rows * sz)
    nt = ctx.threads(_numel(x.shape), 1 << 22)
    eps = repr(float(n.params["eps"]))
    return [f"{fn}({ctx.ptr(x)}, {wp}, {bp}, {ctx.ptr(n)}, ({T} *){mean}, ({T} *){rstd}, {rows}, {cols}, {eps}, {nt});"]


def _gelu(n, ctx):
    x = n.args[0]
    dt = dname(n)
    if dt not in _FLOAT or x.dtype != n.dtype:
        return None
    fn = ctx.ext(f"gelu_fwd_{'f32' if dt == 'float32' else 'f64'}")
    tanh = int(n.params.get("approximate") == "tanh")
    return [f"{fn}({ctx.ptr(x)}, {ctx.ptr(n)}, {_numel(n.shape)}, {tanh}, {ctx.threads(_numel(n.shape), 1 << 22)});"]


def _softmax(n, ctx):
    x = n.args[0]
    dt = dname(n)
    nd = len(x.shape)
    if dt not in _FLOAT or x.dtype != n.dtype or not nd or n.params.get("dim", -1) % nd != nd - 1:
        return None
    cols = x.shape[-1]
    rows = _numel(x.shape) // cols if cols else 0
    fn = ctx.ext(f"softmax_fwd_{'f32' if dt == 'float32' else 'f64'}")
    log = int(n.op == "log_softmax")
    return [f"{fn}({ctx.ptr(x)}, {ctx.ptr(n)}, {rows}, {cols}, {log}, {ctx.threads(_numel(x.shape), 1 << 22)});"]


def _softmax_backward(n, ctx):
    g, y = n.args[0], n.args[1]
    dt = dname(n)
    nd = len(y.shape)
    if dt not in _FLOAT or g.dtype != n.dtype or y.dtype != n.dtype or g.shape != y.shape or not nd:
        return None
    if n.params.get("dim", -1) % nd != nd - 1:
        return None
    cols = y.shape[-1]
    rows = _numel(y.shape) // cols if cols else 0
    fn = ctx.ext(f"softmax_bwd_{'f32' if dt == 'float32' else 'f64'}")
    log = int(bool(n.params.get("log")))
    nt = ctx.threads(_numel(y.shape), 1 << 22)
    return [f"{fn}({ctx.ptr(y)}, {ctx.ptr(g)}, {ctx.ptr(n)}, {rows}, {cols}, {log}, {nt});"]


def _gelu_backward(n, ctx):
    """From ``x`` alone (the forward's saved array is not needed: the kernel recomputes it)."""
    g, x = n.args[0], n.args[1]
    dt = dname(n)
    if dt not in _FLOAT or g.dtype != n.dtype or x.dtype != n.dtype or g.shape != x.shape:
        return None
    fn = ctx.ext(f"gelu_bwd_{'f32' if dt == 'float32' else 'f64'}")
    tanh = int(n.params.get("approximate") == "tanh")
    nt = ctx.threads(_numel(x.shape), 1 << 22)
    return [f"{fn}({ctx.ptr(x)}, {ctx.ptr(g)}, {ctx.ptr(n)}, {_numel(x.shape)}, {tanh}, {nt});"]


def _foreach_add_(n, ctx):
    """``t[k] += other[k] * alpha`` in place for the first ``n_written`` tensors (numbers or
    same-shape tensors as ``other``); the result is the first tensor."""
    k, alpha = n.params.get("n_written"), n.params.get("alpha", 1)
    if set(n.params) - {"n_written", "alpha"} or type(alpha) not in (int, float) or len(n.args) != 2 * k:
        return None
    lines = []
    for t, o in zip(n.args[:k], n.args[k:]):
        if not hasattr(t, "kind") or dname(t) not in _FLOAT:
            return None
        T = CTYPES[dname(t)]
        if hasattr(o, "kind"):
            if o.shape != t.shape or ctx.ctype(o) is None:
                return None
            rhs = f"({T}){ctx.ptr(o)}[i]" + ("" if alpha == 1 else f" * {_R.literal(alpha, T)}")
        elif type(o) in (int, float):
            rhs = _R.literal(o * alpha, T)
        else:
            return None
        lines.append(f"for (int64_t i = 0; i < {_numel(t.shape)}; i++) {ctx.ptr(t)}[i] += {rhs};")
    return Inplace(n.args[0], lines)


def _fused_adam(n, ctx):
    """The optimizer kernel of ``backends/ckernels/optim.c`` over every parameter, in place (the
    step counts are read from their tensors, incremented before, as eagerly)."""
    layout, hp = n.params.get("layout"), n.params
    if layout is None or len(layout) != 6 or hp.get("k") is not None:
        return None
    lists, i = [], 0
    for m in layout:
        lists.append(None if m is None else list(n.args[i : i + m]))
        i += m or 0
    params, avgs, sqs, maxs, grads, steps = lists
    if not params or steps is None or len(steps) != len(params) or (hp.get("amsgrad") and maxs is None):
        return None
    dt = dname(params[0])
    if dt not in _FLOAT:
        return None
    for grp in (params, avgs, sqs, grads) + ((maxs,) if hp.get("amsgrad") else ()):
        if grp is None or len(grp) != len(params) or any(not hasattr(t, "kind") for t in grp):
            return None
    for j, p in enumerate(params):
        if any(g[j].dtype != p.dtype or g[j].shape != p.shape for g in (avgs, sqs, grads)):
            return None
    cnt = len(params)
    sfx = "f32" if dt == "float32" else "f64"
    fn = ctx.ext(f"fused_adam_{sfx}")

    def arr(name, grp):
        return f"void *{name}[{cnt}] = {{{', '.join('(void *)' + ctx.ptr(t) for t in grp)}}};"

    lines = [arr("ps", params), arr("gs", grads), arr("ms", avgs), arr("vs", sqs)]
    lines.append(arr("xs", maxs) if hp.get("amsgrad") else f"void *xs[{cnt}] = {{0}};")
    lines.append(f"const int64_t sizes[{cnt}] = {{{', '.join(str(_numel(p.shape)) for p in params)}}};")
    lines.append(f"const double steps[{cnt}] = {{{', '.join(f'(double){ctx.ptr(s)}[0]' for s in steps)}}};")
    total = sum(_numel(p.shape) for p in params)
    nt = ctx.threads(total, 1 << 17)
    decoupled = int(n.op == "_fused_adamw_")
    lines.append(
        f"{fn}({cnt}, ps, gs, ms, vs, xs, sizes, steps, {float(hp['lr'])!r}, {float(hp['beta1'])!r}, "
        f"{float(hp['beta2'])!r}, {float(hp['eps'])!r}, {float(hp['weight_decay'])!r}, {int(bool(hp['amsgrad']))}, "
        f"{int(bool(hp['maximize']))}, {decoupled}, {nt});"
    )
    return Inplace(params[0], lines)


def _noderef(v, op: str):
    """The forward IR node of a step graph's ``NodeRef`` parameter (``compile/step.py``) made by
    ``op``, or None: lowerings that recompute what the autograd node saved need only that."""
    if type(v).__name__ == "NodeRef" and v.attr is None and getattr(v.op, "op", None) == op:
        return v.op
    return None


def _ce_ok(n) -> bool:
    """A cross_entropy this lowering takes: class indices, mean, no weight/smoothing, 2-D logits."""
    p = n.params
    if len(n.args) != 3 or n.args[2] is not None or p.get("reduction") != "mean" or p.get("ls") != 0.0:
        return False
    if (
        not p.get("softmax_mode")
        or p.get("op") != "cross_entropy"
        or set(p) - {"ignore_index", "reduction", "ls", "softmax_mode", "op"}
    ):
        return False
    x, t = n.args[0], n.args[1]
    return len(x.shape) == 2 and dname(x) in _FLOAT and dname(t) in ("int64", "int32") and t.shape == x.shape[:1]


def _exp(x, v: str) -> str:
    """``exp(v - m)`` as a double, ``m`` the row maximum (a double): float32 rows through the
    vectorizable ``exp_f32`` (mathf.c; about 1 ulp), so the loop over a row runs in SIMD."""
    if dname(x) == "float32":
        return f"(double)exp_f32({v} - (float)m)"
    return f"exp((double){v} - m)"


def _cross_entropy(n, ctx):
    if not _ce_ok(n) or n.shape != ():
        return None
    x, t = n.args[0], n.args[1]
    N, C = x.shape
    ig = int(n.params["ignore_index"])
    xp, tp = ctx.ptr(x), ctx.ptr(t)
    return [
        "double total = 0; int64_t cnt = 0;",
        f"for (int64_t r = 0; r < {N}; r++) {{",
        f"    const int64_t y = (int64_t){tp}[r];",
        f"    if (y == {ig}) continue;",
        f"    if (y < 0 || y >= {C}) return 1;",
        f"    const {ctx.ctype(x)} *row = {xp} + r * {C};",
        "    double m = -INFINITY, s = 0;",
        f"    for (int64_t c = 0; c < {C}; c++) m = row[c] > m ? row[c] : m;",
        "    #pragma omp simd reduction(+:s)",
        f"    for (int64_t c = 0; c < {C}; c++) s += {_exp(x, 'row[c]')};",
        "    total += log(s) + m - (double)row[y]; cnt++;",
        "}",
        f"{ctx.ptr(n)}[0] = ({ctx.ctype(n)})(total / (double)cnt);",
    ]


def _class_loss_backward(n, ctx):
    """(softmax(x) - onehot(y)) * g / (rows not ignored), recomputed from the logits."""
    ce = _noderef(n.params.get("node"), "cross_entropy")
    if ce is None or not _ce_ok(ce) or len(n.args) != 2 or n.args[1] is not ce.args[0]:
        return None
    g, x, t = n.args[0], ce.args[0], ce.args[1]
    if g.shape != () or g.dtype != x.dtype or n.shape != x.shape:
        return None
    N, C = x.shape
    T, ig = ctx.ctype(n), int(ce.params["ignore_index"])
    xp, tp, gp, y = ctx.ptr(x), ctx.ptr(t), ctx.ptr(g), ctx.ptr(n)
    return [
        "int64_t cnt = 0;",
        f"for (int64_t r = 0; r < {N}; r++) cnt += (int64_t){tp}[r] != {ig};",
        f"const double scale = (double){gp}[0] / (double)cnt;",
        f"for (int64_t r = 0; r < {N}; r++) {{",
        f"    const int64_t yr = (int64_t){tp}[r];",
        f"    const {T} *row = {xp} + r * {C};",
        f"    {T} *out = {y} + r * {C};",
        f"    if (yr == {ig}) {{ for (int64_t c = 0; c < {C}; c++) out[c] = 0; continue; }}",
        f"    if (yr < 0 || yr >= {C}) return 1;",
        "    double m = -INFINITY, s = 0;",
        f"    for (int64_t c = 0; c < {C}; c++) m = row[c] > m ? row[c] : m;",
        "    #pragma omp simd reduction(+:s)",
        f"    for (int64_t c = 0; c < {C}; c++) s += {_exp(x, 'row[c]')};",
        "    const double k = scale / s;",
        "    #pragma omp simd",
        f"    for (int64_t c = 0; c < {C}; c++) out[c] = ({T})({_exp(x, 'row[c]')} * k);",
        f"    out[yr] = ({T})((double)out[yr] - scale);",
        "}",
    ]


def _layer_norm_backward(n, ctx):
    """ckernels' layer_norm_bwd, the statistics recomputed from ``x`` (the node is not read)."""
    g, x, w = n.args[0], n.args[1], n.args[2]
    ln = _noderef(n.params.get("node"), "layer_norm")
    need = n.params.get("need")
    dt = dname(x)
    if ln is None or need is None or dt not in _FLOAT or g.dtype != x.dtype or g.shape != x.shape:
        return None
    if w is not None and w.dtype != x.dtype or (w is None and (need[1] or need[2])):
        return None
    nd, axes = len(x.shape), ln.params["axes"]
    k = len(axes)
    if sorted(a % nd for a in axes) != list(range(nd - k, nd)) or ln.args[0] is not x:
        return None
    cols = _numel(x.shape[nd - k :])
    rows = _numel(x.shape) // cols if cols else 0
    if not rows:
        return None
    T, sz = CTYPES[dt], np_size(dt)
    items, outs, j = ctx.items(n), [], 0
    for flag, count in zip(need, (rows * cols, cols, cols)):
        if not flag:
            outs.append("NULL")
            continue
        item = items.get(j)
        outs.append(ctx.ptr(item) if item is not None else f"(({T} *){ctx.scratch(count * sz)})")
        j += 1
    xp = ctx.ptr(x)
    fn = ctx.ext(f"layer_norm_bwd_{'f32' if dt == 'float32' else 'f64'}")
    call = (
        f"{fn}({xp}, {ctx.ptr(w) if w is not None else 'NULL'}, {ctx.ptr(g)}, mean, rstd, {outs[0]}, {outs[1]}, "
        f"{outs[2]}, {rows}, {cols}, 1);"
    )
    km, kr = ctx.kept(ln, "mean"), ctx.kept(ln, "rstd")
    if km is not None and kr is not None:  # the lowered forward kept them
        return [f"{T} *mean = ({T} *){km}, *rstd = ({T} *){kr};", call]
    mean, rstd = f"(({T} *){ctx.scratch(rows * sz)})", f"(({T} *){ctx.scratch(rows * sz)})"
    eps = repr(float(ln.params["eps"]))
    return [
        f"{T} *mean = {mean}, *rstd = {rstd};",
        f"for (int64_t r = 0; r < {rows}; r++) {{",
        f"    const {T} *xr = {xp} + r * {cols};",
        "    double s = 0, v = 0;",
        "    #pragma omp simd reduction(+:s)",
        f"    for (int64_t c = 0; c < {cols}; c++) s += xr[c];",
        f"    const double mu = s / {cols};",
        "    #pragma omp simd reduction(+:v)",
        f"    for (int64_t c = 0; c < {cols}; c++) v += ((double)xr[c] - mu) * ((double)xr[c] - mu);",
        f"    mean[r] = ({T})mu; rstd[r] = ({T})(1.0 / sqrt(v / {cols} + {eps}));",
        "}",
        call,
    ]


def np_size(dt: str) -> int:
    return 4 if dt == "float32" else 8


def _attention_dims(q, k, v, spec, dt, ctx):
    """(B, L, S, E, Ev) when this attention lowers (no dropout, grouped heads, float or
    non-causal bool masks; same batch dims), else None."""
    if dt not in _FLOAT or ctx.gemm(dt) is None or spec.drop is not None or spec.rep != 1:
        return None
    if any(dname(t) != dt or len(t.shape) < 2 for t in (q, k, v)):
        return None
    L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or k.shape[-1] != E or v.shape[-2] != S:
        return None
    if spec.bool_mask is not None and not (spec.causal and L <= S):
        return None
    if not (L and S and E):
        return None
    return _numel(q.shape[:-2]), L, S, E, Ev


def _probs(ctx, dt, T, spec, dims, qp, kp) -> list:
    """Lines that leave softmax(Q_b K_b^T * scale) of batch entry ``b`` in ``s`` (L x S)."""
    _B, L, S, E, _Ev = dims
    exp = "exp_f32" if dt == "float32" else "exp"
    limit = "i + 1" if spec.bool_mask is not None else str(S)
    scale = repr(float(spec.scale))
    return [
        _mm(ctx, dt, 0, 1, L, S, E, scale, f"{qp} + b * {L * E}", E, f"{kp} + b * {S * E}", E, 0, "s", S, "bt"),
        f"for (int64_t i = 0; i < {L}; i++) {{",
        f"    {T} *r = s + i * {S};",
        f"    const int64_t lim = {limit};",
        f"    {T} m = -INFINITY, sum = 0;",
        "    for (int64_t j = 0; j < lim; j++) m = r[j] > m ? r[j] : m;",
        "    #pragma omp simd reduction(+:sum)",
        f"    for (int64_t j = 0; j < lim; j++) {{ r[j] = {exp}(r[j] - m); sum += r[j]; }}",
        f"    const {T} inv = ({T})1 / sum;",
        "    #pragma omp simd",
        "    for (int64_t j = 0; j < lim; j++) r[j] *= inv;",
        f"    for (int64_t j = lim; j < {S}; j++) r[j] = 0;",
        "}",
    ]


def _sdpa(n, ctx):
    """softmax(Q K^T * scale, causal) V per batch entry: two gemms and a row softmax in scratch."""
    if len(n.args) != 3:
        return None
    q, k, v = n.args
    spec, dt = n.params["spec"], dname(n)
    dims = _attention_dims(q, k, v, spec, dt, ctx)
    if dims is None:
        return None
    B, L, S, E, Ev = dims
    T = ctx.ctype(n)
    qp, kp, vp, y = ctx.ptr(q), ctx.ptr(k), ctx.ptr(v), ctx.ptr(n)
    body = _probs(ctx, dt, T, spec, dims, qp, kp)
    body.append(_mm(ctx, dt, 0, 0, L, Ev, S, 1, "s", S, f"{vp} + b * {S * Ev}", Ev, 0, f"{y} + b * {L * Ev}", Ev, "bt"))
    if ctx.node_readers(n):  # the gradient op in this program reads the probabilities instead of recomputing
        head = [f"{T} *probs = ({T} *){ctx.keep(n, 'probs', B * L * S * np_size(dt))};"]
        body.insert(0, f"{T} *s = probs + b * {L * S};")
    else:
        head = [f"{T} *s = (({T} *){ctx.scratch(L * S * np_size(dt))});"]
    head.append(f"{T} *bt = (({T} *){ctx.scratch(E * S * np_size(dt))});  (void)bt;  /* K^T for the small GEMMs */")
    return [*head, f"for (int64_t b = 0; b < {B}; b++) {{", *("    " + x for x in body), "}"]


def _sdpa_backward(n, ctx):
    """dq, dk, dv of attention, the probabilities recomputed as in the forward lowering:
    dv = P^T g, dP = g V^T, dS = P (dP - rowsum(dP P)), dq = dS K s, dk = dS^T Q s."""
    fwd = _noderef(n.params.get("node"), "scaled_dot_product_attention")
    need = n.params.get("need")
    if fwd is None or need is None or len(n.args) != 4 or len(need) != 3:
        return None
    g, q, k, v = n.args
    if tuple(fwd.args) != (q, k, v) or g.shape != fwd.shape:
        return None
    spec, dt = fwd.params["spec"], dname(q)
    dims = _attention_dims(q, k, v, spec, dt, ctx)
    if dims is None or g.dtype != q.dtype:
        return None
    B, L, S, E, Ev = dims
    T, sz = CTYPES[dt], np_size(dt)
    items, outs, j = ctx.items(n), [], 0
    for flag, t in zip(need, (q, k, v)):
        if not flag:
            outs.append(None)
            continue
        item = items.get(j)
        outs.append(ctx.ptr(item) if item is not None else f"(({T} *){ctx.scratch(_numel(t.shape) * sz)})")
        j += 1
    qp, kp, vp, gp = ctx.ptr(q), ctx.ptr(k), ctx.ptr(v), ctx.ptr(g)
    gb = f"{gp} + b * {L * Ev}"
    kept = ctx.kept(fwd, "probs")
    if kept is not None:  # the lowered forward kept them
        head = f"{T} *probs = ({T} *){kept}, *dp = (({T} *){ctx.scratch(L * S * sz)});"
        body = [f"const {T} *s = probs + b * {L * S};"]
    else:
        head = f"{T} *s = (({T} *){ctx.scratch(L * S * sz)}), *dp = (({T} *){ctx.scratch(L * S * sz)});"
        body = _probs(ctx, dt, T, spec, dims, qp, kp)
    if outs[2] is not None:
        body.append(_mm(ctx, dt, 1, 0, S, Ev, L, 1, "s", S, gb, Ev, 0, f"{outs[2]} + b * {S * Ev}", Ev, "bt"))
    body += [
        _mm(ctx, dt, 0, 1, L, S, Ev, 1, gb, Ev, f"{vp} + b * {S * Ev}", Ev, 0, "dp", S, "bt"),
        f"for (int64_t i = 0; i < {L * S}; i += {S}) {{",
        "    double acc = 0;",
        "    #pragma omp simd reduction(+:acc)",
        f"    for (int64_t j = 0; j < {S}; j++) acc += (double)dp[i + j] * s[i + j];",
        f"    for (int64_t j = 0; j < {S}; j++) dp[i + j] = s[i + j] * (dp[i + j] - ({T})acc);",
        "}",
    ]
    scale = repr(float(spec.scale))
    if outs[0] is not None:
        body.append(
            _mm(
                ctx, dt, 0, 0, L, E, S, scale, "dp", S, f"{kp} + b * {S * E}", E, 0, f"{outs[0]} + b * {L * E}", E, "bt"
            )
        )
    if outs[1] is not None:
        body.append(
            _mm(
                ctx, dt, 1, 0, S, E, L, scale, "dp", S, f"{qp} + b * {L * E}", E, 0, f"{outs[1]} + b * {S * E}", E, "bt"
            )
        )
    bt = f"{T} *bt = (({T} *){ctx.scratch(max(E, Ev) * S * sz)});  (void)bt;  /* K^T or V^T (small GEMMs) */"
    return [
        head,
        bt,
        f"for (int64_t b = 0; b < {B}; b++) {{",
        *("    " + x for x in body),
        "}",
    ]


NN_LOWERINGS = {
    "linear": _linear,
    "linear_backward": _linear_backward,
    "layer_norm": _layer_norm,
    "gelu": _gelu,
    "softmax": _softmax,
    "log_softmax": _softmax,
    "softmax_backward": _softmax_backward,
    "gelu_backward": _gelu_backward,
    "scaled_dot_product_attention": _sdpa,
    "scaled_dot_product_attention_backward": _sdpa_backward,
    "cross_entropy": _cross_entropy,
    "class_loss_backward": _class_loss_backward,
    "layer_norm_backward": _layer_norm_backward,
    "_foreach_add_": _foreach_add_,
    "_fused_adam_": _fused_adam,
    "_fused_adamw_": _fused_adam,
}


def recurrence_args(fwd, ctx):
    """``(gi, state, w, b, dtype, T, B, G, H)`` of a ``recurrent_sequence`` node whose arguments a
    recurrence lowering (LSTM, GRU, RNN) can take: one float dtype with a GEMM, a 3-d input, a 2-d
    weight and state; else None. Each lowering then checks its own gate count and state width."""
    if len(fwd.args) != 4:
        return None
    gi, state, w, b = fwd.args
    dt = dname(fwd)
    if dt not in _FLOAT or ctx.gemm(dt) is None:
        return None
    if any(t is not None and dname(t) != dt for t in (gi, state, w, b)):
        return None
    if len(gi.shape) != 3 or len(w.shape) != 2 or len(state.shape) != 2:
        return None
    T, B, G = gi.shape
    return gi, state, w, b, dt, T, B, G, w.shape[1]


def grad_outputs(n, ctx, need) -> list:
    """A gradient node's output pointers, one per input in ``need`` order: None where that input
    needs no gradient or the graph never reads it (the outputs are numbered by the needed ones)."""
    items, outs, j = ctx.items(n), [], 0
    for flag in need:
        item = items.get(j) if flag else None
        j += bool(flag)
        outs.append(ctx.ptr(item) if item is not None else None)
    return outs
