/* Direct convolution kernels (conv2d forward, input gradient, weight gradient).
 *
 * Compiled once per dtype like kernels.c (`real`, K(name)). The Python side (ops.py) packs the
 * NCHW input into a zero-padded channels-last buffer ("NHWC": the channels of one pixel are
 * contiguous), so that a kernel tap is one short vector of channels. Output channels are the
 * vector lanes: one block is 64 bytes (16 float32 / 8 float64: one zmm with AVX-512, two ymm
 * with AVX2), or 128 bytes where ops.py asks for it (AVX-512, channel count a multiple of it), and
 * XB neighbouring output pixels are computed together, so each weight vector loaded feeds XB
 * fused multiply-adds and the accumulators stay in registers. This beats im2col + GEMM for the
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
/* A block of output channels is NV vectors: NV1 (64 bytes: 16 float32) or NV2 = 2*NV1 (128 bytes,
 * chosen per call by ops.py where the channel count is a multiple of it and the CPU has AVX-512).
 * XB1 / XB2 output pixels share each weight load: XB*NV accumulators stay in registers, at least 8
 * independent ones (an FMA's latency times the two FMA pipes). */
#ifdef __AVX512F__
/* 32 zmm registers of 64 bytes: 14 pixels x 1 vector, or 12 pixels x 2 vectors. The pixel
 * counts of the CNNs here (28*28, 14*14) are multiples of 14; remainders go in blocks of 8, 4,
 * 2 and 1. */
#define VB 64
#define NV1 1
#define XB1 14
#define XB2 12
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
/* AVX: 16 ymm registers: 4 pixels x 2 vectors of 32 bytes (8 accumulators), or 2 x 4. */
#define VB 32 /* bytes per vector; the compiler splits it where the CPU has narrower ones */
#define NV1 2
#define XB1 4
#define XB2 2
/* Without this GCC re-loads a vector that several FMAs share as a memory operand of each of them
 * (3 loads per 2 FMAs instead of 1.5), and the inner loops become load-bound. Only where the
 * vector type is one AVX register; elsewhere the compiler is left to itself. */
#if defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif
#endif
#define NV2 (2 * NV1)
#define CB 4 /* input channels per register block of the weight gradient */
#define WROWS 96 /* output pixels per chunk of the weight gradient */
#endif
#undef VL
#undef OB
#define VL ((int64_t)(VB / sizeof(real)))
#define OB (NV1 * VL) /* 64 bytes of output channels: ops.py's _ob (2*OB where the call allows) */

typedef real K(vec) __attribute__((vector_size(VB)));
typedef real K(uvec) __attribute__((vector_size(VB), aligned(sizeof(real)))); /* unaligned access */

#ifdef __AVX512F__
typedef __typeof__((K(vec)){0} < (K(vec)){0}) K(mvec); /* integer lanes of the same width */

/* One stage of an in-register transpose: rows i and i + h (i without bit h) exchange the half
 * blocks selected by bit h of the column index. */
#define TRANSPOSE_STAGE(v, h)                                                                                          \
    do {                                                                                                               \
        K(mvec) lo_, hi_;                                                                                              \
        _Pragma("GCC unroll 16") for (int p = 0; p < VL; p++) {                                                        \
            lo_[p] = (p & (h)) ? VL + p - (h) : p;                                                                     \
            hi_[p] = (p & (h)) ? VL + p : p + (h);                                                                     \
        }                                                                                                              \
        _Pragma("GCC unroll 16") for (int i = 0; i < VL; i++) if (!(i & (h))) {                                        \
            K(vec) a_ = v[i], b_ = v[i + (h)];                                                                         \
            v[i] = __builtin_shuffle(a_, b_, lo_);                                                                     \
            v[i + (h)] = __builtin_shuffle(a_, b_, hi_);                                                               \
        }                                                                                                              \
    } while (0)
#endif

/* dst (N, Hd, Wd, Cd) = 0, then dst[n, oy + y, ox + x, c] = src[n, c, y, x] wherever that lies
 * inside dst (offsets may be negative: those pixels are dropped). Channels >= C stay 0. With
 * AVX-512 (and Cd a multiple of VL) VL pixels x VL channels are transposed in registers; else
 * 8 pixels at a time. */
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
#ifdef __AVX512F__
        if (Cd % VL == 0 && x1 - x0 >= VL)
            for (; x < x1; x += VL) {
                if (x + VL > x1) x = x1 - VL; /* the last block overlaps the one before: same values */
                real *d = drow + (ox + x) * Cd;
                for (int64_t cb = 0; cb < C; cb += VL) {
                    K(vec) v[VL];
                    _Pragma("GCC unroll 16") for (int i = 0; i < VL; i++) v[i] =
                        cb + i < C ? *(const K(uvec) *)(s + (cb + i) * H * W + x) : (K(vec)){0};
                    if (VL >= 16) TRANSPOSE_STAGE(v, 8);
                    TRANSPOSE_STAGE(v, 4);
                    TRANSPOSE_STAGE(v, 2);
                    TRANSPOSE_STAGE(v, 1);
                    _Pragma("GCC unroll 16") for (int k = 0; k < VL; k++) *(K(uvec) *)(d + k * Cd + cb) = v[k];
                }
            }
#endif
        for (; x + 8 <= x1; x += 8) {
            real *d = drow + (ox + x) * Cd;
            for (int64_t c = 0; c < C; c++)
                for (int k = 0; k < 8; k++) d[k * Cd + c] = s[c * H * W + x + k];
        }
        for (; x < x1; x++)
            for (int64_t c = 0; c < C; c++) drow[(ox + x) * Cd + c] = s[c * H * W + x];
    }
}

/* nx output pixels x NVX vectors of output channels; pixel b's window starts at x[b]. The ob-wide
 * (ob = NVX*VL) weight columns of this block are contiguous: w is (kh, kw, C, ob). The nk (<= ob)
 * real channels are written planar: channel k of pixel b to out[k*plane + at[b]], plus bias[k].
 * nx is a constant at every call, so the loops unroll onto registers. One function per block
 * width, each with arrays of its exact size (larger ones cost the narrow blocks ~10%). */
#define CONV_BLOCK(NAME, NVX)                                                                                          \
    static inline __attribute__((always_inline)) void NAME(const real *const *x, const int64_t *at, const real *w,   \
                                                           real *out, const real *bias, int64_t C, int64_t kh,       \
                                                           int64_t kw, int64_t si, int64_t sj, int64_t plane,        \
                                                           int64_t nk, const int nx) {                               \
        K(vec) acc[XB1 > XB2 ? XB1 : XB2][NVX];                                                                      \
        const int64_t ob = NVX * VL;                                                                                 \
        for (int b = 0; b < nx; b++)                                                                                 \
            for (int v = 0; v < NVX; v++) acc[b][v] = (K(vec)){0};                                                   \
        /* the taps of a kernel row at adjacent pixels (sj == C): one run of kw*C values */                          \
        int64_t run = sj == C ? kw * C : C, jn = sj == C ? 1 : kw;                                                   \
        for (int64_t i = 0; i < kh; i++)                                                                             \
            for (int64_t j = 0; j < jn; j++) {                                                                       \
                int64_t off = i * si + j * sj;                                                                       \
                const real *wr = w + (i * kw + j) * C * ob;                                                          \
                for (int64_t c = 0; c < run; c++, wr += ob) {                                                        \
                    K(vec) wv[NVX];                                                                                  \
                    for (int v = 0; v < NVX; v++) {                                                                  \
                        wv[v] = *(const K(uvec) *)(wr + v * VL);                                                     \
                        KEEP_IN_REGISTER(wv[v]);                                                                     \
                    }                                                                                                \
                    for (int b = 0; b < nx; b++) {                                                                   \
                        real xv = x[b][off + c];                                                                     \
                        for (int v = 0; v < NVX; v++) acc[b][v] += xv * wv[v];                                       \
                    }                                                                                                \
                }                                                                                                    \
            }                                                                                                        \
        for (int b = 0; b < nx; b++) {                                                                               \
            real r[NVX * VB / sizeof(real)];                                                                         \
            for (int v = 0; v < NVX; v++) *(K(uvec) *)(r + v * VL) = acc[b][v];                                      \
            for (int64_t k = 0; k < nk; k++) out[k * plane + at[b]] = bias ? r[k] + bias[k] : r[k];                  \
        }                                                                                                            \
    }
CONV_BLOCK(K(conv_block1), NV1)
CONV_BLOCK(K(conv_block2), NV2)
#undef CONV_BLOCK

/* The P = Ho*Wo output pixels of one image for one block of output channels, XBX at a time in
 * row-major order (a block may span two rows, so only the image's last block is partial, done
 * in blocks of 8, 4, 2, 1 pixels: constant sizes, each unrolled). A function per block width:
 * inlined into one, they would share a register allocation. */
#define CONV_IMAGE(NAME, BLOCK, XBX)                                                                                  \
    static __attribute__((noinline)) void NAME(const real *ximg, const real *wb, real *o, const real *bb, int64_t C, \
                                               int64_t Wp, int64_t Ho, int64_t Wo, int64_t kh, int64_t kw,           \
                                               int64_t sh, int64_t sw, int64_t si, int64_t sj, int64_t plane,        \
                                               int64_t o_row, int64_t o_col, int64_t nk) {                           \
        int64_t P = Ho * Wo;                                                                                          \
        for (int64_t p = 0; p < P; p += XBX) {                                                                        \
            const real *xs[XBX];                                                                                      \
            int64_t at[XBX];                                                                                          \
            int nx = P - p < XBX ? (int)(P - p) : XBX;                                                                \
            for (int b = 0; b < nx; b++) {                                                                            \
                int64_t y = (p + b) / Wo, x = (p + b) % Wo;                                                           \
                xs[b] = ximg + (y * sh * Wp + x * sw) * C;                                                            \
                at[b] = y * o_row + x * o_col;                                                                        \
            }                                                                                                         \
            if (nx == XBX) {                                                                                          \
                BLOCK(xs, at, wb, o, bb, C, kh, kw, si, sj, plane, nk, XBX);                                          \
                continue;                                                                                             \
            }                                                                                                         \
            int b = 0;                                                                                                \
            if (XBX > 8)                                                                                              \
                for (; b + 8 <= nx; b += 8) BLOCK(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 8);        \
            if (XBX > 4)                                                                                              \
                for (; b + 4 <= nx; b += 4) BLOCK(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 4);        \
            if (XBX > 2)                                                                                              \
                for (; b + 2 <= nx; b += 2) BLOCK(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 2);        \
            for (; b < nx; b++) BLOCK(xs + b, at + b, wb, o, bb, C, kh, kw, si, sj, plane, nk, 1);                    \
        }                                                                                                             \
    }
CONV_IMAGE(K(conv_image1), K(conv_block1), XB1)
CONV_IMAGE(K(conv_image2), K(conv_block2), XB2)
#undef CONV_IMAGE

/* Correlation of xp (N, Hp, Wp, C) with w (Op/ob, kh, kw, C, ob) plus bias (may be NULL), where
 * ob = OB or 2*OB is the block of output channels and Op is O rounded up to a multiple of ob (the
 * extra weight columns are zero). Output pixel (y, x) of channel o of image n goes to
 * out[(n*O + o)*plane + y*o_row + x*o_col]: plain NCHW (plane = Ho*Wo, o_row = Wo, o_col = 1), or
 * every stride-th pixel of a larger image (the phases of a strided convolution's input
 * gradient). */
void K(conv_fwd)(const real *xp, const real *w, const real *bias, real *out, int64_t N, int64_t Hp, int64_t Wp,
                 int64_t C, int64_t Ho, int64_t Wo, int64_t O, int64_t Op, int64_t ob, int64_t kh, int64_t kw,
                 int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t plane, int64_t o_row, int64_t o_col, int nt) {
    int64_t si = dh * Wp * C, sj = dw * C;
#pragma omp parallel for collapse(2) num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t o0 = 0; o0 < Op; o0 += ob) {
            const real *ximg = xp + n * Hp * Wp * C, *wb = w + o0 * kh * kw * C, *bb = bias ? bias + o0 : NULL;
            real *o = out + (n * O + o0) * plane;
            int64_t nk = O - o0 < ob ? O - o0 : ob;
            if (ob == NV2 * VL)
                K(conv_image2)(ximg, wb, o, bb, C, Wp, Ho, Wo, kh, kw, sh, sw, si, sj, plane, o_row, o_col, nk);
            else
                K(conv_image1)(ximg, wb, o, bb, C, Wp, Ho, Wo, kh, kw, sh, sw, si, sj, plane, o_row, o_col, nk);
        }
}

/* One tap's contribution, for CB input channels at x0 and NVX vectors of output channels at g0,
 * over ny rows of Wo output pixels, added to gw's block a (CB rows of stride Op). XU pixel chains
 * of accumulators (summed at the end), so that CB * NVX * XU >= 8 FMAs are independent. */
#define WGRAD_BLOCK(NAME, NVX, XU)                                                                                    \
    static void NAME(const real *x0, const real *g0, real *a, int64_t Op, int64_t ny, int64_t Wo, int64_t x_row,      \
                     int64_t g_row, int64_t xstep) {                                                                  \
        K(vec) acc[XU][CB][NVX];                                                                                      \
        for (int k = 0; k < CB; k++)                                                                                  \
            for (int v = 0; v < NVX; v++) {                                                                           \
                acc[0][k][v] = *(K(uvec) *)(a + k * Op + v * VL);                                                     \
                for (int u = 1; u < XU; u++) acc[u][k][v] = (K(vec)){0};                                              \
            }                                                                                                         \
        for (int64_t yy = 0; yy < ny; yy++) {                                                                         \
            const real *xr = x0 + yy * x_row, *gr = g0 + yy * g_row;                                                  \
            int64_t x = 0;                                                                                            \
            for (; x + XU <= Wo; x += XU, xr += XU * xstep, gr += XU * Op)                                            \
                for (int u = 0; u < XU; u++) {                                                                        \
                    K(vec) gv[NVX];                                                                                   \
                    for (int v = 0; v < NVX; v++) {                                                                   \
                        gv[v] = *(const K(uvec) *)(gr + u * Op + v * VL);                                             \
                        KEEP_IN_REGISTER(gv[v]);                                                                      \
                    }                                                                                                 \
                    for (int k = 0; k < CB; k++)                                                                      \
                        for (int v = 0; v < NVX; v++) acc[u][k][v] += xr[u * xstep + k] * gv[v];                      \
                }                                                                                                     \
            for (; x < Wo; x++, xr += xstep, gr += Op)                                                                \
                for (int v = 0; v < NVX; v++) {                                                                       \
                    K(vec) gv = *(const K(uvec) *)(gr + v * VL);                                                      \
                    for (int k = 0; k < CB; k++) acc[0][k][v] += xr[k] * gv;                                          \
                }                                                                                                     \
        }                                                                                                             \
        for (int k = 0; k < CB; k++)                                                                                  \
            for (int v = 0; v < NVX; v++) {                                                                           \
                for (int u = 1; u < XU; u++) acc[0][k][v] += acc[u][k][v];                                            \
                *(K(uvec) *)(a + k * Op + v * VL) = acc[0][k][v];                                                     \
            }                                                                                                         \
    }
WGRAD_BLOCK(K(wgrad_block1), NV1, (8 / (CB * NV1) > 1 ? 8 / (CB * NV1) : 1))
WGRAD_BLOCK(K(wgrad_block2), NV2, (8 / (CB * NV2) > 1 ? 8 / (CB * NV2) : 1))
#undef WGRAD_BLOCK

/* gw[t] (kh, kw, Cp, Op) = sum over the output pixels of thread t's share of xp (N, Hp, Wp, Cp)
 * windows times g, whose pixel (n, y, x) is at g + n*g_img + y*g_row + x*Op. Cp % CB == 0,
 * Op % OB == 0; gw holds nt zeroed partial sums, which the caller adds up. Each output row is a
 * tile that stays in L1 while every tap and channel block passes over it. */
void K(conv_wgrad)(const real *xp, const real *g, real *gw, int64_t N, int64_t Hp, int64_t Wp, int64_t Cp,
                   int64_t Ho, int64_t Wo, int64_t Op, int64_t ob, int64_t g_img, int64_t g_row, int64_t kh, int64_t kw,
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
                        for (int64_t o0 = 0; o0 < Op; o0 += ob) {
                            real *a = gwt + cb * Op + o0;
                            const real *xr = x0 + cb, *gr = g0 + o0;
                            if (ob == NV2 * VL)
                                K(wgrad_block2)(xr, gr, a, Op, ny, Wo, sh * Wp * Cp, g_row, xstep);
                            else
                                K(wgrad_block1)(xr, gr, a, Op, ny, Wo, sh * Wp * Cp, g_row, xstep);
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
