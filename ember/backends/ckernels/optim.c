/* Fused optimizer updates: one call updates every parameter of a list (PyTorch's fused=True on CPU).
 *
 * Instantiated once per dtype by optim.py (`real` is float or double, K(name) adds the suffix).
 * Each kernel takes arrays of buffer pointers, one entry per parameter, plus per-parameter sizes
 * (and step counts); the Python wrapper has checked every buffer's dtype, size and contiguity.
 * Work is split across OpenMP threads within each parameter; parameters are independent, so
 * threads move to the next one without waiting (nowait).
 * The arithmetic follows PyTorch's fused CPU kernels (FusedAdamKernel.cpp, FusedSGDKernel.cpp,
 * FusedAdagradKernel.cpp), in the parameter's dtype.
 */

/* One parameter's Adam update; the flags are compile-time constants at each call site below, so
 * the compiler emits one branch-free (vectorized) loop per combination. Called inside a parallel
 * region: the iterations are shared among the threads (an orphaned `omp for`). */
static inline __attribute__((always_inline)) void K(adam_one)(
    real *restrict p, const real *restrict g, real *restrict m, real *restrict v, real *restrict vmax, int64_t size,
    double step, double lr, double beta1, double beta2, double eps, double weight_decay, const int amsgrad,
    const int maximize, const int wd_mode)
{
    const double bc1 = 1.0 - pow(beta1, step);
    const real bc2_sqrt = (real)sqrt(1.0 - pow(beta2, step));
    const real step_size = (real)(lr / bc1);
    const real b2 = (real)beta2, c2 = (real)(1.0 - beta2);
    const real wd = (real)weight_decay, decay = (real)(1.0 - lr * weight_decay), e = (real)eps;
    /* m.lerp_(g, w) with w = 1 - beta1, as torch's kernel: one fused multiply-add from the nearer end,
     * m + w (g - m) for |w| < 0.5, else g + (w - 1) (g - m). */
    const int small_w = fabs(1.0 - beta1) < 0.5;
    const real coeff = (real)(small_w ? 1.0 - beta1 : -beta1);
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < size; i++) {
        real gi = maximize ? -g[i] : g[i];
        real pi = p[i];
        if (wd_mode == 1) /* L2 penalty (Adam) */
            gi += pi * wd;
        else if (wd_mode == 2) /* decoupled (AdamW) */
            pi = pi * decay;
        const real mi0 = m[i];
        const real mi = FMA(coeff, gi - mi0, small_w ? mi0 : gi);
        real vi = v[i] * b2 + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) { /* max that propagates NaN, as torch.maximum */
            const real vm = vmax[i];
            vi = (vm > vi || vm != vm) ? vm : vi;
            vmax[i] = vi;
        }
        p[i] = pi - step_size * mi / (SQRT(vi) / bc2_sqrt + e);
    }
}

void K(fused_adam)(int64_t n, void **params, void **grads, void **exp_avgs, void **exp_avg_sqs,
                   void **max_exp_avg_sqs, const int64_t *sizes, const double *steps, double lr, double beta1,
                   double beta2, double eps, double weight_decay, int amsgrad, int maximize, int decoupled,
                   int nthreads)
{
    const int wd_mode = weight_decay == 0 ? 0 : decoupled ? 2 : 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    for (int64_t t = 0; t < n; t++) {
        real *p = (real *)params[t];
        const real *g = (const real *)grads[t];
        real *m = (real *)exp_avgs[t];
        real *v = (real *)exp_avg_sqs[t];
        real *vmax = amsgrad ? (real *)max_exp_avg_sqs[t] : 0;
#define ADAM(A, M, W) K(adam_one)(p, g, m, v, vmax, sizes[t], steps[t], lr, beta1, beta2, eps, weight_decay, A, M, W)
#define ADAM_WD(A, M) \
    if (wd_mode == 0) \
        ADAM(A, M, 0); \
    else if (wd_mode == 1) \
        ADAM(A, M, 1); \
    else \
        ADAM(A, M, 2)
        if (amsgrad) {
            if (maximize) {
                ADAM_WD(1, 1);
            } else {
                ADAM_WD(1, 0);
            }
        } else {
            if (maximize) {
                ADAM_WD(0, 1);
            } else {
                ADAM_WD(0, 0);
            }
        }
#undef ADAM_WD
#undef ADAM
    }
}

void K(fused_sgd)(int64_t n, void **params, void **grads, void **momentum_buffers, const int64_t *sizes,
                  const int8_t *first_step, double lr, double momentum, double dampening, double weight_decay,
                  int nesterov, int maximize, int nthreads)
{
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    for (int64_t t = 0; t < n; t++) {
        real *p = (real *)params[t];
        const real *g = (const real *)grads[t];
        real *buf = momentum != 0 ? (real *)momentum_buffers[t] : 0;
        const int first = first_step[t];
        const real l = (real)lr, mom = (real)momentum, damp = (real)(1.0 - dampening), wd = (real)weight_decay;
        const int64_t size = sizes[t];
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < size; i++) {
            real gi = maximize ? -g[i] : g[i];
            real pi = p[i];
            if (weight_decay != 0)
                gi += pi * wd;
            if (momentum != 0) {
                real bi = first ? gi : buf[i] * mom + gi * damp;
                buf[i] = bi;
                gi = nesterov ? gi + bi * mom : bi;
            }
            p[i] = pi - l * gi;
        }
    }
}

void K(fused_adagrad)(int64_t n, void **params, void **grads, void **state_sums, const int64_t *sizes,
                      const double *steps, double lr, double lr_decay, double weight_decay, double eps, int maximize,
                      int nthreads)
{
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    for (int64_t t = 0; t < n; t++) {
        real *p = (real *)params[t];
        const real *g = (const real *)grads[t];
        real *s = (real *)state_sums[t];
        const real clr = (real)(lr / (1.0 + (steps[t] - 1.0) * lr_decay));
        const real wd = (real)weight_decay, e = (real)eps;
        const int64_t size = sizes[t];
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < size; i++) {
            real gi = maximize ? -g[i] : g[i];
            real pi = p[i];
            if (weight_decay != 0)
                gi += pi * wd;
            const real si = s[i] + gi * gi;
            s[i] = si;
            p[i] = pi - clr * gi / (SQRT(si) + e);
        }
    }
}

/* The in-place steps of the unfused (for-loop) optimizers, one pass each where NumPy needs three
 * (a temporary, a scale, an add). Same-shape C-contiguous buffers only (the wrapper checks); the
 * arithmetic is PyTorch's vectorized CPU kernels' (PointwiseOpsKernel.cpp, Lerp.h), fused
 * multiply-adds included, so results agree to the bit:
 * addcmul: fma(value * a, b, x);  addcdiv: x + (value * a) / b;
 * lerp (weight w in x's type): |w| < 0.5 ? fma(w, e - x, x) : fma(-(e - x), 1 - w, e). */
void K(addc_inplace)(int64_t size, real *restrict x, const real *restrict a, const real *restrict b, double value,
                     int divide, int nthreads)
{
    const real v = (real)value;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        if (divide) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < size; i++)
                x[i] = x[i] + v * a[i] / b[i];
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < size; i++)
                x[i] = FMA(v * a[i], b[i], x[i]);
        }
    }
}

void K(lerp_inplace)(int64_t size, real *restrict x, const real *restrict e, double weight, int nthreads)
{
    const real w = (real)weight, w1 = (real)1 - w;
    const int small = fabs((double)w) < 0.5;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t i = 0; i < size; i++) {
        const real xi = x[i], ei = e[i], d = ei - xi;
        x[i] = small ? FMA(w, d, xi) : FMA(-d, w1, ei);
    }
}
