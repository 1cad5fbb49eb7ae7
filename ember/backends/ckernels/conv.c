/* Direct convolution kernels (conv2d forward, input gradient, weight gradient).
 *
 * Compiled once per dtype like kernels.c (`real`, K(name)). The Python side (ops.py) packs the
 * NCHW input into a zero-padded channels-last buffer ("NHWC": the channels of one pixel are
 * contiguous), so that a kernel tap is one short vector of channels. Output channels are the
 * vector lanes: one block is OB = two vectors (16 float32 / 8 float64), and XB neighbouring
 * output pixels are computed together, so each weight vector loaded feeds XB fused
 * multiply-adds and the 2*XB accumulators stay in registers. This beats im2col + GEMM for the
 * small channel counts of CNNs on small images, where BLAS runs far from its peak (K = C*kh*kw is
 * small, and im2col / col2im move 9x the data); see BENCHMARKS.md.
 *
 * The input gradient is the same forward kernel run on the output gradient with the kernel flipped
 * and transposed (per stride phase, see ops.py). `nt` is the OpenMP thread count (1 = serial).
 *
 * Max pooling is here too: a window loop per output pixel on the NCHW planes, no packing.
 */

#ifndef EMBER_CONV_GEOMETRY
#define EMBER_CONV_GEOMETRY
#ifdef __AVX512F__
/* 32 zmm registers of 64 bytes: one vector is the whole block of output channels (OB = VL), and
 * XB = 14 output pixels give 14 independent accumulators (an FMA's latency times the two FMA
 * pipes needs at least 8 in flight). The pixel counts of the CNNs here (28*28, 14*14) are
 * multiples of 14; other remainders go in blocks of 8, 4, 2 and 1. */
#define VB 64
#define NV 1
#define XB 14
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
/* AVX: two 32-byte vectors per block of output channels, 4 pixels, 8 accumulators. */
#define VB 32 /* bytes per vector; the compiler splits it where the CPU has narrower ones */
#define NV 2
#define XB 4
/* Without this GCC re-loads a vector that several FMAs share as a memory operand of each of them
 * (3 loads per 2 FMAs instead of 1.5), and the inner loops become load-bound. Only where the
 * vector type is one AVX register; elsewhere the compiler is left to itself. */
#if defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif
#endif
#define CB 4 /* input channels per register block of the weight gradient */
#define XU (8 / (CB * NV)) /* independent pixel chains of the weight gradient */
#define WROWS 96 /* output pixels per chunk of the weight gradient */
#endif
#undef VL
#undef OB
#define VL ((int64_t)(VB / sizeof(real)))
#define OB (NV * VL) /* 64 bytes of output channels in either case: ops.py's _ob */

typedef real K(vec) __attribute__((vector_size(VB)));
typedef real K(uvec) __attribute__((vector_size(VB), aligned(sizeof(real)))); /* unaligned access */

/* dst (N, Hd, Wd, Cd) = 0, then dst[n, oy + y, ox + x, c] = src[n, c, y, x] wherever that lies
 * inside dst (offsets may be negative: those pixels are dropped). Channels >= C stay 0. The
 * transposition goes 8 pixels at a time: 8 contiguous reads per channel, and the 8 destination
 * pixels (8*Cd values) stay in L1 while every channel is written into them. */
void K(pack_nhwc)(const real *src, real *dst, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Hd, int64_t Wd,
                  int64_t Cd, int64_t oy, int64_t ox, int nt) {
    int64_t x0 = ox < 0 ? -ox : 0, x1 = Wd - ox < W ? Wd - ox : W; /* source columns inside dst */
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < N * Hd; r++) {
        int64_t n = r / Hd, y = r % Hd - oy;
        real *drow = dst + r * Wd * Cd;
        memset(drow, 0, (size_t)(Wd * Cd) * sizeof(real));
        if (y < 0 || y >= H) continue;
        const real *s = src + (n * C * H + y) * W;
        int64_t x = x0;
        for (; x + 8 <= x1; x += 8) {
            real *d = drow + (ox + x) * Cd;
            for (int64_t c = 0; c < C; c++)
                for (int k = 0; k < 8; k++) d[k * Cd + c] = s[c * H * W + x + k];
        }
        for (; x < x1; x++)
            for (int64_t c = 0; c < C; c++) drow[(ox + x) * Cd + c] = s[c * H * W + x];
    }
}

/* nx (<= XB) output pixels x OB output channels; pixel b's window starts at x[b]. The OB-wide
 * weight columns of this block are contiguous: w is (kh, kw, C, OB). The nk (<= OB) real
 * channels are written planar: channel k of pixel b to out[k*plane + at[b]], plus bias[k]. */
static inline __attribute__((always_inline)) void K(conv_block)(const real *const *x, const int64_t *at,
                                                                 const real *w, real *out, const real *bias,
                                                                 int64_t C, int64_t kh, int64_t kw, int64_t si,
                                                                 int64_t sj, int64_t plane, int64_t nk, const int nx) {
    K(vec) acc[XB][NV];
    for (int b = 0; b < nx; b++)
        for (int v = 0; v < NV; v++) acc[b][v] = (K(vec)){0};
    /* When the taps of a kernel row are adjacent pixels (sj == C), their channels are one run of
     * kw*C values in both the input and the weights: one long inner loop per kernel row. */
    int64_t run = sj == C ? kw * C : C, jn = sj == C ? 1 : kw;
    for (int64_t i = 0; i < kh; i++)
        for (int64_t j = 0; j < jn; j++) {
            int64_t off = i * si + j * sj;
            const real *wr = w + (i * kw + j) * C * OB;
            for (int64_t c = 0; c < run; c++, wr += OB) {
                K(vec) wv[NV];
                for (int v = 0; v < NV; v++) {
                    wv[v] = *(const K(uvec) *)(wr + v * VL);
                    KEEP_IN_REGISTER(wv[v]);
                }
                for (int b = 0; b < nx; b++) {
                    real xv = x[b][off + c];
                    for (int v = 0; v < NV; v++) acc[b][v] += xv * wv[v];
                }
            }
        }
    for (int b = 0; b < nx; b++) {
        real r[OB];
        for (int v = 0; v < NV; v++) *(K(uvec) *)(r + v * VL) = acc[b][v];
        for (int64_t k = 0; k < nk; k++) out[k * plane + at[b]] = bias ? r[k] + bias[k] : r[k];
    }
}

/* Correlation of xp (N, Hp, Wp, C) with w (Op/OB, kh, kw, C, OB) plus bias (may be NULL), where Op
 * is O rounded up to a multiple of OB (the extra weight columns are zero). Output pixel (y, x)
 * of channel o of image n goes to out[(n*O + o)*plane + y*o_row + x*o_col]: plain NCHW
 * (plane = Ho*Wo, o_row = Wo, o_col = 1), or every stride-th pixel of a larger image (the
 * phases of a strided convolution's input gradient). The pixels of one image are taken XB at a
 * time in row-major order (a block may span two rows, so only the image's last block is
 * partial). */
void K(conv_fwd)(const real *xp, const real *w, const real *bias, real *out, int64_t N, int64_t Hp, int64_t Wp,
                 int64_t C, int64_t Ho, int64_t Wo, int64_t O, int64_t Op, int64_t kh, int64_t kw, int64_t sh,
                 int64_t sw, int64_t dh, int64_t dw, int64_t plane, int64_t o_row, int64_t o_col, int nt) {
    int64_t si = dh * Wp * C, sj = dw * C, P = Ho * Wo;
#pragma omp parallel for collapse(2) num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t ob = 0; ob < Op; ob += OB) {
            const real *ximg = xp + n * Hp * Wp * C, *wb = w + ob * kh * kw * C, *bb = bias ? bias + ob : NULL;
            real *o = out + (n * O + ob) * plane;
            int64_t nk = O - ob < OB ? O - ob : OB;
            for (int64_t p = 0; p < P; p += XB) {
                const real *xs[XB];
                int64_t at[XB];
                int nx = P - p < XB ? (int)(P - p) : XB;
                for (int b = 0; b < nx; b++) {
                    int64_t y = (p + b) / Wo, x = (p + b) % Wo;
                    xs[b] = ximg + (y * sh * Wp + x * sw) * C;
                    at[b] = y * o_row + x * o_col;
                }
                if (nx == XB) {
                    K(conv_block)(xs, at, wb, o, bb, C, kh, kw, si, sj, plane, nk, XB);
                    continue;
                }
                /* the image's last, partial block: in blocks of 8, 4, 2, 1 pixels (constant sizes,
                 * so each is unrolled with its accumulators in registers) */
                int b = 0;
#if XB > 8
                for (; b + 8 <= nx; b += 8) K(conv_block)(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 8);
#endif
#if XB > 4
                for (; b + 4 <= nx; b += 4) K(conv_block)(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 4);
#endif
                for (; b + 2 <= nx; b += 2) K(conv_block)(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 2);
                for (; b < nx; b++) K(conv_block)(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 1);
            }
        }
}

/* gw[t] (kh, kw, Cp, Op) = sum over the output pixels of thread t's share of xp (N, Hp, Wp, Cp)
 * windows times g, whose pixel (n, y, x) is at g + n*g_img + y*g_row + x*Op. Cp % CB == 0,
 * Op % OB == 0; gw holds nt zeroed partial sums, which the caller adds up. Each output row is a
 * tile that stays in L1 while every tap and channel block passes over it. */
void K(conv_wgrad)(const real *xp, const real *g, real *gw, int64_t N, int64_t Hp, int64_t Wp, int64_t Cp,
                   int64_t Ho, int64_t Wo, int64_t Op, int64_t g_img, int64_t g_row, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t dh, int64_t dw, int nt) {
    int64_t xstep = sw * Cp, rows = N * Ho;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        int t = 0, nth = 1;
#endif
        real *gwt0 = gw + (int64_t)t * kh * kw * Cp * Op;
        /* The thread's rows in chunks of about WROWS pixels of one image: the chunk's input and
         * gradient pixels stay in L1 while every tap and channel block passes over them, and the
         * accumulators stay in registers over the whole chunk. */
        int64_t per = Wo >= WROWS ? 1 : WROWS / Wo;
        for (int64_t r0 = rows * t / nth, r_end = rows * (t + 1) / nth; r0 < r_end;) {
            int64_t n = r0 / Ho, y0 = r0 % Ho, ny = Ho - y0;
            ny = ny < per ? ny : per;
            ny = ny < r_end - r0 ? ny : r_end - r0;
            r0 += ny;
            const real *g0 = g + n * g_img + y0 * g_row;
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++) {
                    const real *x0 = xp + ((n * Hp + y0 * sh + i * dh) * Wp + j * dw) * Cp;
                    real *gwt = gwt0 + (i * kw + j) * Cp * Op;
                    for (int64_t cb = 0; cb < Cp; cb += CB)
                        for (int64_t ob = 0; ob < Op; ob += OB) {
                            /* XU pixel chains of accumulators (summed at the end), so that
                             * CB * NV * XU >= 8 FMAs are independent */
                            K(vec) acc[XU][CB][NV];
                            real *a = gwt + cb * Op + ob;
                            for (int k = 0; k < CB; k++)
                                for (int v = 0; v < NV; v++) {
                                    acc[0][k][v] = *(K(uvec) *)(a + k * Op + v * VL);
                                    for (int u = 1; u < XU; u++) acc[u][k][v] = (K(vec)){0};
                                }
                            for (int64_t yy = 0; yy < ny; yy++) {
                                const real *xr = x0 + yy * sh * Wp * Cp + cb, *gr = g0 + yy * g_row + ob;
                                int64_t x = 0;
                                for (; x + XU <= Wo; x += XU, xr += XU * xstep, gr += XU * Op)
                                    for (int u = 0; u < XU; u++) {
                                        K(vec) gv[NV];
                                        for (int v = 0; v < NV; v++) {
                                            gv[v] = *(const K(uvec) *)(gr + u * Op + v * VL);
                                            KEEP_IN_REGISTER(gv[v]);
                                        }
                                        for (int k = 0; k < CB; k++)
                                            for (int v = 0; v < NV; v++)
                                                acc[u][k][v] += xr[u * xstep + k] * gv[v];
                                    }
                                for (; x < Wo; x++, xr += xstep, gr += Op)
                                    for (int v = 0; v < NV; v++) {
                                        K(vec) gv = *(const K(uvec) *)(gr + v * VL);
                                        for (int k = 0; k < CB; k++) acc[0][k][v] += xr[k] * gv;
                                    }
                            }
                            for (int k = 0; k < CB; k++)
                                for (int v = 0; v < NV; v++) {
                                    for (int u = 1; u < XU; u++) acc[0][k][v] += acc[u][k][v];
                                    *(K(uvec) *)(a + k * Op + v * VL) = acc[0][k][v];
                                }
                        }
                }
        }
    }
}

/* Max pooling of P = N*C planes x (H, W): out (P, Ho, Wo) and idx, the flat H*W index of each
 * window's maximum (the first one; a NaN wins and stays, as in PyTorch). Window positions in
 * the padding are skipped. */
void K(max_pool2d_fwd)(const real *x, real *out, int64_t *idx, int64_t P, int64_t H, int64_t W, int64_t Ho,
                       int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                       int64_t dw, int nt) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t p = 0; p < P; p++) {
        const real *plane = x + p * H * W;
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                real best = -INFINITY;
                int64_t at = -1;
                for (int64_t i = 0; i < kh; i++) {
                    int64_t y = oy * sh - ph + i * dh;
                    if (y < 0 || y >= H) continue;
                    for (int64_t j = 0; j < kw; j++) {
                        int64_t xx = ox * sw - pw + j * dw;
                        if (xx < 0 || xx >= W) continue;
                        real v = plane[y * W + xx];
                        if (at < 0 || v > best || (v != v && best == best)) {
                            best = v;
                            at = y * W + xx;
                        }
                    }
                }
                out[(p * Ho + oy) * Wo + ox] = best;
                idx[(p * Ho + oy) * Wo + ox] = at;
            }
    }
}

/* gx (P, H*W) = 0, then gx[p, idx[p, q]] += g[p, q] for every output pixel q of Q = Ho*Wo (windows
 * that overlap add up; an index outside the plane, e.g. -1 of a window with no input pixel, adds
 * nothing). */
void K(max_pool2d_bwd)(const real *g, const int64_t *idx, real *gx, int64_t P, int64_t HW, int64_t Q, int nt) {
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t p = 0; p < P; p++) {
        real *plane = gx + p * HW;
        memset(plane, 0, (size_t)HW * sizeof(real));
        for (int64_t q = 0; q < Q; q++)
            if ((uint64_t)idx[p * Q + q] < (uint64_t)HW) plane[idx[p * Q + q]] += g[p * Q + q];
    }
}
