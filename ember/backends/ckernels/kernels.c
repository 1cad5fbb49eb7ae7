/* Row kernels for softmax, log_softmax, layer_norm and gelu, forward and backward.
 *
 * This body is compiled twice by the loader (__init__.py): once with `real` = float and K(name) =
 * name_f32, once with double / name_f64. Arrays are C-contiguous (rows, cols); the Python side
 * checks that. Reductions keep LANES independent partial sums so that the compiler vectorizes them
 * without -ffast-math, which is not used because it would break NaN and inf semantics. `nt` is
 * the OpenMP thread count (1 = serial); without OpenMP the pragmas are ignored.
 */

static inline real K(row_max)(const real *x, int64_t n) {
    real acc[LANES], m = -INFINITY;
    int64_t i = 0;
    for (int j = 0; j < LANES; j++) acc[j] = -INFINITY;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
    for (int j = 0; j < LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;  /* NaNs are skipped here; they still reach the output through the sums */
}

static inline real K(lane_sum)(const real *acc) {
    real s = 0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

static inline real K(row_sum)(const real *x, int64_t n) {
    real acc[LANES] = {0}, s;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j];
    s = K(lane_sum)(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

static inline real K(row_dot)(const real *x, const real *y, int64_t n) {
    real acc[LANES] = {0}, s;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j] * y[i + j];
    s = K(lane_sum)(acc);
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* y = softmax(x) (log_ = 0) or log_softmax(x) (log_ = 1) over each row. Flat loops over a row
 * (which sits in L1) vectorize best: max, exp into y, sum, then scale or subtract. */
void K(softmax_fwd)(const real *x, real *y, int64_t rows, int64_t cols, int log_, int nt) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const real *xr = x + r * cols;
        real *yr = y + r * cols;
        real m = K(row_max)(xr, cols);
        for (int64_t i = 0; i < cols; i++) yr[i] = EXP(xr[i] - m);
        real s = K(row_sum)(yr, cols);
        if (log_) {
            real ls = LOG(s);
            for (int64_t i = 0; i < cols; i++) yr[i] = (xr[i] - m) - ls;
        } else {
            real inv = (real)1 / s;
            for (int64_t i = 0; i < cols; i++) yr[i] *= inv;
        }
    }
}

/* gx = y * (g - sum(g * y)) for softmax; gx = g - exp(y) * sum(g) for log_softmax. */
void K(softmax_bwd)(const real *y, const real *g, real *gx, int64_t rows, int64_t cols, int log_, int nt) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const real *yr = y + r * cols, *gr = g + r * cols;
        real *out = gx + r * cols;
        real s = log_ ? K(row_sum)(gr, cols) : K(row_dot)(gr, yr, cols);
        if (log_)
            for (int64_t i = 0; i < cols; i++) out[i] = gr[i] - EXP(yr[i]) * s;
        else
            for (int64_t i = 0; i < cols; i++) out[i] = yr[i] * (gr[i] - s);
    }
}

/* y = (x - mean) * rstd * w + b per row (w, b may be NULL); mean and rstd are kept per row. */
void K(layer_norm_fwd)(const real *x, const real *w, const real *b, real *y, real *mean, real *rstd,
                       int64_t rows, int64_t cols, double eps, int nt) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const real *xr = x + r * cols;
        real *yr = y + r * cols, acc[LANES] = {0}, mu, var;
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += xr[i + j];
        mu = K(lane_sum)(acc);
        for (; i < cols; i++) mu += xr[i];
        mu /= (real)cols;
        for (int j = 0; j < LANES; j++) acc[j] = 0;
        for (i = 0; i + LANES <= cols; i += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += (xr[i + j] - mu) * (xr[i + j] - mu);
        var = K(lane_sum)(acc);
        for (; i < cols; i++) var += (xr[i] - mu) * (xr[i] - mu);
        var = var / (real)cols + (real)eps;
        real rs = (real)1 / SQRT(var);
        mean[r] = mu;
        rstd[r] = rs;
        if (w && b)
            for (i = 0; i < cols; i++) yr[i] = (xr[i] - mu) * rs * w[i] + b[i];
        else if (w)
            for (i = 0; i < cols; i++) yr[i] = (xr[i] - mu) * rs * w[i];
        else if (b)
            for (i = 0; i < cols; i++) yr[i] = (xr[i] - mu) * rs + b[i];
        else
            for (i = 0; i < cols; i++) yr[i] = (xr[i] - mu) * rs;
    }
}

/* Layer norm backward. Rows are split into `nchunks` blocks (one per thread); block c adds its
 * rows' g * xhat and g into gw_part[c] and gb_part[c] (the caller sums the blocks). gx, w,
 * gw_part and gb_part may be NULL when not needed. */
void K(layer_norm_bwd)(const real *x, const real *w, const real *g, const real *mean, const real *rstd,
                       real *gx, real *gw_part, real *gb_part, int64_t rows, int64_t cols, int nchunks) {
#pragma omp parallel for num_threads(nchunks) if (nchunks > 1) schedule(static, 1)
    for (int c = 0; c < nchunks; c++) {
        real *gw = gw_part ? gw_part + c * cols : 0, *gb = gb_part ? gb_part + c * cols : 0;
        if (gw) memset(gw, 0, cols * sizeof(real));
        if (gb) memset(gb, 0, cols * sizeof(real));
        for (int64_t r = rows * c / nchunks; r < rows * (c + 1) / nchunks; r++) {
            const real *xr = x + r * cols, *gr = g + r * cols;
            real mu = mean[r], rs = rstd[r];
            int64_t i;
            if (gw)
                for (i = 0; i < cols; i++) gw[i] += gr[i] * ((xr[i] - mu) * rs);
            if (gb)
                for (i = 0; i < cols; i++) gb[i] += gr[i];
            if (!gx) continue;
            /* gx = rstd * (gxh - mean(gxh) - xhat * mean(gxh * xhat)), gxh = g * w */
            real acc_a[LANES] = {0}, acc_c[LANES] = {0}, a, cc;
            for (i = 0; i + LANES <= cols; i += LANES)
                for (int j = 0; j < LANES; j++) {
                    real gxh = w ? gr[i + j] * w[i + j] : gr[i + j];
                    acc_a[j] += gxh;
                    acc_c[j] += gxh * ((xr[i + j] - mu) * rs);
                }
            a = K(lane_sum)(acc_a);
            cc = K(lane_sum)(acc_c);
            for (; i < cols; i++) {
                real gxh = w ? gr[i] * w[i] : gr[i];
                a += gxh;
                cc += gxh * ((xr[i] - mu) * rs);
            }
            a /= (real)cols;
            cc /= (real)cols;
            real *out = gx + r * cols;
            for (i = 0; i < cols; i++) {
                real gxh = w ? gr[i] * w[i] : gr[i];
                out[i] = rs * (gxh - a - ((xr[i] - mu) * rs) * cc);
            }
        }
    }
}

static inline real K(row_sqdev)(const real *x, int64_t n, real mu) {
    real acc[LANES] = {0}, s;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (x[i + j] - mu) * (x[i + j] - mu);
    s = K(lane_sum)(acc);
    for (; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return s;
}

static inline real K(row_dot_dev)(const real *g, const real *x, int64_t n, real mu) {
    real acc[LANES] = {0}, s;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += g[i + j] * (x[i + j] - mu);
    s = K(lane_sum)(acc);
    for (; i < n; i++) s += g[i] * (x[i] - mu);
    return s;
}

/* Batch norm of a (N, C) input (L = 1): the channels are contiguous, so every pass runs along a
 * row with one accumulator per channel (double, as in the general kernel) and vectorizes.
 * scratch holds 2*C doubles (the caller's: kernels never allocate, so they cannot fail). */
static void K(batch_norm_fwd_rows)(const real *x, const real *w, const real *b, real *y, real *mean, real *var,
                                   real *rstd, int64_t N, int64_t C, double eps, double *scratch) {
    double *acc = scratch;
    real *sc = (real *)(scratch + C);
    for (int64_t c = 0; c < C; c++) acc[c] = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) acc[c] += x[n * C + c];
    for (int64_t c = 0; c < C; c++) {
        mean[c] = (real)(acc[c] / (double)N);
        acc[c] = 0;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) acc[c] += (double)((x[n * C + c] - mean[c]) * (x[n * C + c] - mean[c]));
    for (int64_t c = 0; c < C; c++) {
        double v = acc[c] / (double)N;
        var[c] = (real)v;
        rstd[c] = (real)(1.0 / sqrt(v + eps));
        sc[c] = w ? w[c] * rstd[c] : rstd[c];
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) y[n * C + c] = (x[n * C + c] - mean[c]) * sc[c] + (b ? b[c] : 0);
}

/* Training batch norm of x (N, C, L), one channel per iteration: its mean and biased variance
 * over N*L values (two passes; each image's partial sum is added in double), then
 * y = (x - mean) * rstd * w + b (w, b may be NULL). mean, var and rstd get C entries. */
void K(batch_norm_fwd)(const real *x, const real *w, const real *b, real *y, real *mean, real *var, real *rstd,
                       int64_t N, int64_t C, int64_t L, double eps, double *scratch, int nt) {
    if (L == 1) {
        K(batch_norm_fwd_rows)(x, w, b, y, mean, var, rstd, N, C, eps, scratch);
        return;
    }
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double s = 0, v = 0;
        for (int64_t n = 0; n < N; n++) s += K(row_sum)(x + (n * C + c) * L, L);
        real mu = (real)(s / (double)(N * L));
        for (int64_t n = 0; n < N; n++) v += K(row_sqdev)(x + (n * C + c) * L, L, mu);
        v /= (double)(N * L);
        real rs = (real)(1.0 / sqrt(v + eps)), sc = w ? w[c] * rs : rs, sh = b ? b[c] : 0;
        mean[c] = mu;
        var[c] = (real)v;
        rstd[c] = rs;
        for (int64_t n = 0; n < N; n++) {
            const real *xr = x + (n * C + c) * L;
            real *yr = y + (n * C + c) * L;
            for (int64_t i = 0; i < L; i++) yr[i] = (xr[i] - mu) * sc + sh;
        }
    }
}

/* The backward of batch_norm_fwd_rows (L = 1), in row passes like it; scratch: 2*C doubles. */
static void K(batch_norm_bwd_rows)(const real *x, const real *g, const real *w, const real *mean, const real *rstd,
                                   real *gx, real *gw, real *gb, int64_t N, int64_t C, double *scratch) {
    double *sg = scratch, *sgx = scratch + C;
    for (int64_t c = 0; c < 2 * C; c++) scratch[c] = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            sg[c] += g[n * C + c];
            sgx[c] += (double)(g[n * C + c] * (x[n * C + c] - mean[c]));
        }
    for (int64_t c = 0; c < C; c++) {
        if (gb) gb[c] = (real)sg[c];
        if (gw) gw[c] = (real)sgx[c] * rstd[c];
        sg[c] /= (double)N; /* from here on: the means the input gradient needs */
        sgx[c] = sgx[c] / (double)N * rstd[c] * rstd[c];
    }
    if (gx)
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                real k = w ? w[c] * rstd[c] : rstd[c];
                gx[n * C + c] = k * (g[n * C + c] - (real)sg[c] - (x[n * C + c] - mean[c]) * (real)sgx[c]);
            }
}

/* Batch norm backward from the forward's x, mean and rstd, one channel per iteration:
 * gb = sum(g), gw = sum(g * xhat), gx = w * rstd * (g - mean(g) - xhat * mean(g * xhat)).
 * gx, gw, gb may be NULL when not needed; w NULL means 1. */
void K(batch_norm_bwd)(const real *x, const real *g, const real *w, const real *mean, const real *rstd, real *gx,
                       real *gw, real *gb, int64_t N, int64_t C, int64_t L, double *scratch, int nt) {
    if (L == 1) {
        K(batch_norm_bwd_rows)(x, g, w, mean, rstd, gx, gw, gb, N, C, scratch);
        return;
    }
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        real mu = mean[c], rs = rstd[c];
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < N; n++) {
            const real *gr = g + (n * C + c) * L, *xr = x + (n * C + c) * L;
            sg += K(row_sum)(gr, L);
            sgx += K(row_dot_dev)(gr, xr, L, mu);
        }
        if (gb) gb[c] = (real)sg;
        if (gw) gw[c] = (real)sgx * rs;
        if (!gx) continue;
        real k = w ? w[c] * rs : rs, a = (real)(sg / (double)(N * L)), q = (real)(sgx / (double)(N * L)) * rs * rs;
        for (int64_t n = 0; n < N; n++) {
            const real *gr = g + (n * C + c) * L, *xr = x + (n * C + c) * L;
            real *out = gx + (n * C + c) * L;
            for (int64_t i = 0; i < L; i++) out[i] = k * (gr[i] - a - (xr[i] - mu) * q);
        }
    }
}

/* LSTM cell rows. The restrict parameters tell GCC the rows never overlap (c is the previous
 * step's output row), which it needs to vectorize loops over this many arrays; noinline keeps
 * that knowledge (it is weaker on block-scope pointers after inlining). */
static __attribute__((noinline)) void K(lstm_cell_row)(const real *restrict a, const real *restrict c,
                                                       real *restrict c_new, real *restrict tc,
                                                       real *restrict h_new, int64_t H) {
    const real *restrict ai = a, *restrict af = a + H, *restrict ag = a + 2 * H, *restrict ao = a + 3 * H;
    for (int64_t k = 0; k < H; k++) {
        real cn = af[k] * c[k] + ai[k] * ag[k];
        real t = TANH(cn);
        c_new[k] = cn;
        tc[k] = t;
        h_new[k] = ao[k] * t;
    }
}

static __attribute__((noinline)) void K(lstm_cell_row_bwd)(const real *restrict a, const real *restrict c,
                                                           const real *restrict tc, const real *restrict gh,
                                                           const real *restrict gc, const real *restrict carry_h,
                                                           real *restrict carry_c, real *restrict d, int64_t H) {
    const real *restrict ai = a, *restrict af = a + H, *restrict ag = a + 2 * H, *restrict ao = a + 3 * H;
    real *restrict di = d, *restrict df = d + H, *restrict dg = d + 2 * H, *restrict dout = d + 3 * H;
    for (int64_t k = 0; k < H; k++) {
        real i = ai[k], f = af[k], g = ag[k], o = ao[k], t = tc[k];
        real dh = gh[k] + carry_h[k];
        real dc = gc[k] + carry_c[k] + dh * o * ((real)1 - t * t);
        di[k] = dc * g * (i - i * i);
        df[k] = dc * c[k] * (f - f * f);
        dg[k] = dc * i * ((real)1 - g * g);
        dout[k] = dh * t * (o - o * o);
        carry_c[k] = dc * f;
    }
}

/* One LSTM step's pointwise part, B rows of H units, gate columns in PyTorch's order (i, f, g, o).
 * The pre-activations are gi (the step's input projection, (B, 4H)) + bias (4H, may be NULL) +
 * hh (h W_hh^T, (B, 4H)); act (B, 4H) gets the activations sigmoid(i, f), tanh(g), sigmoid(o).
 * With c the previous cell state (row stride c_stride): c' = f c + i g, tc = tanh(c'),
 * h' = o tc; out (B, 2H) gets [h' | c']. */
void K(lstm_fwd_step)(const real *gi, const real *bias, const real *hh, const real *c, int64_t c_stride, real *act,
                      real *out, real *tc, int64_t B, int64_t H) {
    for (int64_t r = 0; r < B; r++) {
        const real *gr = gi + r * 4 * H, *hr = hh + r * 4 * H;
        real *ar = act + r * 4 * H, *h_new = out + r * 2 * H;
        if (bias)
            for (int64_t k = 0; k < 4 * H; k++) ar[k] = gr[k] + hr[k] + bias[k];
        else
            for (int64_t k = 0; k < 4 * H; k++) ar[k] = gr[k] + hr[k];
        for (int64_t k = 0; k < 2 * H; k++) ar[k] = (real)1 / ((real)1 + EXP(-ar[k]));
        for (int64_t k = 2 * H; k < 3 * H; k++) ar[k] = TANH(ar[k]);
        for (int64_t k = 3 * H; k < 4 * H; k++) ar[k] = (real)1 / ((real)1 + EXP(-ar[k]));
        K(lstm_cell_row)(ar, c + r * c_stride, h_new + H, tc + r * H, h_new, H);
    }
}

/* One LSTM step backward, pointwise part (gate order i, f, g, o throughout). act, c (row stride
 * c_stride) and tc are what the forward step saw and saved; gout (B, 2H) is the gradient of its
 * output [h' | c'] from above, carry_h / carry_c the gradients reaching h' / c' from the next
 * step (carry_c is replaced by the gradient of c). dgates (B, 4H) gets the pre-activation
 * gradients; the caller then forms carry_h = dgates W_hh. */
void K(lstm_bwd_step)(const real *act, const real *c, int64_t c_stride, const real *tc, const real *gout,
                      const real *carry_h, real *carry_c, real *dgates, int64_t B, int64_t H) {
    for (int64_t r = 0; r < B; r++)
        K(lstm_cell_row_bwd)(act + r * 4 * H, c + r * c_stride, tc + r * H, gout + r * 2 * H, gout + r * 2 * H + H,
                             carry_h + r * H, carry_c + r * H, dgates + r * 4 * H, H);
}

/* gelu: x * Phi(x) (tanh_ = 0, exact through erf) or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void K(gelu_fwd)(const real *x, real *y, int64_t n, int tanh_, int nt) {
    const real k0 = (real)0.7978845608028654, k1 = (real)0.044715, s = (real)0.7071067811865476;
    if (tanh_) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = (real)0.5 * x[i] * ((real)1 + TANH(k0 * (x[i] + k1 * x[i] * x[i] * x[i])));
    } else {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * ((real)0.5 * ((real)1 + ERF(x[i] * s)));
    }
}

/* gx = g * d gelu / dx: Phi(x) + x phi(x), or the derivative of the tanh form. */
void K(gelu_bwd)(const real *x, const real *g, real *gx, int64_t n, int tanh_, int nt) {
    const real k0 = (real)0.7978845608028654, k1 = (real)0.044715, s = (real)0.7071067811865476;
    const real inv_sqrt_2pi = (real)0.3989422804014327;
    if (tanh_) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            real v = x[i], t = TANH(k0 * (v + k1 * v * v * v));
            real dt = ((real)1 - t * t) * k0 * ((real)1 + (real)3 * k1 * v * v);
            gx[i] = g[i] * ((real)0.5 * ((real)1 + t) + (real)0.5 * v * dt);
        }
    } else {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            real v = x[i];
            real cdf = (real)0.5 * ((real)1 + ERF(v * s));
            gx[i] = g[i] * (cdf + v * inv_sqrt_2pi * EXP((real)-0.5 * v * v));
        }
    }
}
