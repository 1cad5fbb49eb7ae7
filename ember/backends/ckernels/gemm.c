/* A register-blocked GEMM for 64-byte vectors (AVX-512), and the LSTM time loops built on it.
 *
 * Compiled per dtype like kernels.c (`real`, K(name)); it comes after kernels.c in the translation
 * unit and calls its LSTM step kernels. The Python side (ops.py) uses these only where the CPU has
 * AVX-512 (`ember_avx512()`): there one tile of GR rows x GNR = 2 vectors of columns keeps 16
 * accumulators in zmm registers. Elsewhere the code still compiles (the compiler splits the
 * vectors) and is exercised by the tests, but NumPy's BLAS is used.
 *
 * Why not BLAS: an LSTM step is a (batch x H) @ (H x 4H) product with a small batch, 64 times per
 * layer and direction; here W_hh is packed once per sequence and the whole time loop (GEMM plus
 * the fused pointwise step) is one C call. The packed B operand is k-major panels of GNR columns
 * (zero beyond N), so a tile reads two aligned-stride vectors per k and broadcasts GR scalars of
 * A, which may have any strides (a transposed A costs nothing). One panel of B (K x GNR) stays in
 * L1/L2 while every row block of A passes over it.
 */

#ifndef EMBER_GEMM_ONCE
#define EMBER_GEMM_ONCE
#include <stdlib.h> /* aligned_alloc, free: gemm_cblas's packing buffers */
#define GR 8 /* rows of a tile */
#define GKC 256 /* depth of one packed block of A and B in the general GEMM */
#define GMC 128 /* rows of one packed block of A (GMC x GKC: 128 KiB of float32, in L2) */
/* 1 when the library was built for AVX-512: the GEMM's tiles then fit the register file. */
int ember_avx512(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
#ifdef __AVX512F__
#define GEMM_KEEP(v) __asm__("" : "+v"(v))
#else
#define GEMM_KEEP(v) ((void)0)
#endif
#endif
#undef GVL
#undef GNR
#define GVL ((int64_t)(64 / sizeof(real)))
#define GNR (2 * GVL) /* columns of a tile and of a packed panel */

typedef real K(gvec) __attribute__((vector_size(64)));
typedef real K(guvec) __attribute__((vector_size(64), aligned(sizeof(real))));

/* bp (ceil(N/GNR), Kd, GNR) = B (Kd x N, element (k, n) at b[k*rsb + n*csb]) in panels of GNR
 * columns, zero-filled past N. */
void K(gemm_pack_b)(const real *b, int64_t rsb, int64_t csb, int64_t Kd, int64_t N, real *bp) {
    for (int64_t j0 = 0; j0 < N; j0 += GNR) {
        int64_t nn = N - j0 < GNR ? N - j0 : GNR;
        real *dst = bp + j0 * Kd;
        for (int64_t k = 0; k < Kd; k++, dst += GNR) {
            if (csb != 1) break; /* below: column by column, each a contiguous read when rsb == 1 */
            memcpy(dst, b + k * rsb + j0, (size_t)nn * sizeof(real));
            for (int64_t n = nn; n < GNR; n++) dst[n] = 0;
        }
        if (csb == 1) continue;
        dst = bp + j0 * Kd;
        for (int64_t n = 0; n < GNR; n++) {
            const real *src = b + (j0 + n) * csb;
            if (n >= nn)
                for (int64_t k = 0; k < Kd; k++) dst[k * GNR + n] = 0;
            else
                for (int64_t k = 0; k < Kd; k++) dst[k * GNR + n] = src[k * rsb];
        }
    }
}

/* C tile (nm <= GR rows x nn <= GNR columns at c, row stride ldc) = (acc ? C : 0) + A B, A's
 * element (m, k) at a[m*rsa + k*csa], B one packed panel (Kd x GNR). Rows past nm read row 0 of A
 * (valid memory) and are not stored. */
static inline __attribute__((always_inline)) void K(gemm_tile)(const real *a, int64_t rsa, int64_t csa,
                                                                const real *bp, real *c, int64_t ldc, int64_t Kd,
                                                                int64_t nm, int64_t nn, int acc) {
    K(gvec) c0[GR], c1[GR];
    const real *am[GR];
    for (int m = 0; m < GR; m++) {
        c0[m] = c1[m] = (K(gvec)){0};
        am[m] = a + (m < nm ? m : 0) * rsa;
    }
    for (int64_t k = 0; k < Kd; k++, bp += GNR) {
        K(gvec) b0 = *(const K(guvec) *)bp, b1 = *(const K(guvec) *)(bp + GVL);
        GEMM_KEEP(b0);
        GEMM_KEEP(b1);
        int64_t ka = k * csa;
        for (int m = 0; m < GR; m++) {
            real v = am[m][ka];
            c0[m] += v * b0;
            c1[m] += v * b1;
        }
    }
    if (nm == GR && nn == GNR) {
        for (int m = 0; m < GR; m++) {
            real *cr = c + m * ldc;
            if (acc) {
                c0[m] += *(K(guvec) *)cr;
                c1[m] += *(K(guvec) *)(cr + GVL);
            }
            *(K(guvec) *)cr = c0[m];
            *(K(guvec) *)(cr + GVL) = c1[m];
        }
        return;
    }
    for (int64_t m = 0; m < nm; m++) {
        real r[GNR];
        *(K(guvec) *)r = c0[m];
        *(K(guvec) *)(r + GVL) = c1[m];
        real *cr = c + m * ldc;
        for (int64_t n = 0; n < nn; n++) cr[n] = acc ? cr[n] + r[n] : r[n];
    }
}

/* C (M x N, row stride ldc) = (acc ? C : 0) + A B with B packed whole (gemm_pack_b, depth Kd). The
 * panels are shared out between nt threads (each writes its own columns of C). */
static void K(gemm_packed)(const real *a, int64_t rsa, int64_t csa, const real *bp, real *c, int64_t ldc, int64_t M,
                           int64_t N, int64_t Kd, int acc, int nt) {
    int64_t panels = (N + GNR - 1) / GNR;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t jp = 0; jp < panels; jp++) {
        int64_t nn = N - jp * GNR < GNR ? N - jp * GNR : GNR;
        for (int64_t i0 = 0; i0 < M; i0 += GR)
            K(gemm_tile)(a + i0 * rsa, rsa, csa, bp + jp * GNR * Kd, c + i0 * ldc + jp * GNR, ldc, Kd,
                         M - i0 < GR ? M - i0 : GR, nn, acc);
    }
}

/* ap (ceil(mc/GR), kc, GR) = the mc x kc block of A at a (element (m, k) at a[m*rsa + k*csa]) in
 * k-major panels of GR rows, zero-filled past mc: a tile then reads its GR scalars per k from one
 * cache line, whatever A's strides (a transposed A with a 4 KiB row stride would otherwise map
 * every row into the same L1 set). */
static void K(gemm_pack_a)(const real *a, int64_t rsa, int64_t csa, int64_t mc, int64_t kc, real *ap) {
    for (int64_t i0 = 0; i0 < mc; i0 += GR, ap += GR * kc) {
        int64_t nm = mc - i0 < GR ? mc - i0 : GR;
        if (rsa == 1 && nm == GR) { /* a transposed A: GR contiguous scalars per k */
            for (int64_t k = 0; k < kc; k++)
                for (int64_t m = 0; m < GR; m++) ap[k * GR + m] = a[i0 + k * csa + m];
            continue;
        }
        for (int64_t m = 0; m < GR; m++) {
            const real *src = a + (i0 + m) * rsa;
            if (m >= nm)
                for (int64_t k = 0; k < kc; k++) ap[k * GR + m] = 0;
            else
                for (int64_t k = 0; k < kc; k++) ap[k * GR + m] = src[k * csa];
        }
    }
}

/* C (M x N, row stride ldc) = (acc ? C : 0) + A B for strided A (element (m, k) at
 * a[m*rsa + k*csa]) and B ((k, n) at b[k*rsb + n*csb]), blocked as in GotoBLAS: GKC rows of B
 * packed into bp (room for ceil(N/GNR) * GNR * min(Kd, GKC) elements; it stays in L2/L3), GMC x
 * GKC blocks of A packed into ap (room for GMC * GKC elements; L2), and every panel of B (L1) meets
 * every row panel of the A block. nt threads share the panels (own columns: same sums for any nt). */
void K(gemm)(const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb, int64_t csb, real *c, int64_t ldc,
             int64_t M, int64_t N, int64_t Kd, int acc, real *bp, real *ap, int nt) {
    int64_t panels = (N + GNR - 1) / GNR;
    for (int64_t p0 = 0; p0 < Kd; p0 += GKC) {
        int64_t kc = Kd - p0 < GKC ? Kd - p0 : GKC;
        int accp = acc || p0 > 0;
        K(gemm_pack_b)(b + p0 * rsb, rsb, csb, kc, N, bp);
        for (int64_t m0 = 0; m0 < M; m0 += GMC) {
            int64_t mc = M - m0 < GMC ? M - m0 : GMC;
            K(gemm_pack_a)(a + m0 * rsa + p0 * csa, rsa, csa, mc, kc, ap);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
            for (int64_t jp = 0; jp < panels; jp++) {
                int64_t nn = N - jp * GNR < GNR ? N - jp * GNR : GNR;
                for (int64_t i0 = 0; i0 < mc; i0 += GR)
                    K(gemm_tile)(ap + i0 * kc, 1, GR, bp + jp * GNR * kc, c + (m0 + i0) * ldc + jp * GNR, ldc, kc,
                                 mc - i0 < GR ? mc - i0 : GR, nn, accp);
            }
        }
    }
}

/* The forward time loop of one LSTM direction: per step t (in order, or reversed) hh = h W_hh^T
 * from wp (W_hh^T packed: depth H, 4H columns), then the fused pointwise step (kernels.c) from
 * gi[t] (B, 4H). The first step reads h and c from state (B, 2H rows of stride s_stride), later
 * ones from the previous step's out row [h | c]. hh is (B, 4H) scratch. The GEMMs' column panels
 * are shared between nt threads (each thread writes its own columns: the same sums for any nt). */
void K(lstm_seq_fwd)(const real *gi, const real *bias, const real *wp, const real *state, int64_t s_stride, real *act,
                     real *out, real *tc, real *hh, int64_t T, int64_t B, int64_t H, int reverse, int nt) {
    const real *h = state;
    int64_t hs = s_stride;
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? T - 1 - s : s;
        K(gemm_packed)(h, hs, 1, wp, hh, 4 * H, B, 4 * H, H, 0, nt);
        real *o = out + t * B * 2 * H;
        K(lstm_fwd_step)(gi + t * B * 4 * H, bias, hh, h + H, hs, act + t * B * 4 * H, o, tc + t * B * H, B, H);
        h = o;
        hs = 2 * H;
    }
}

/* The backward time loop of one LSTM direction (reverse of the forward's order): per step the
 * fused pointwise gradient (kernels.c) into dgates[t], then carry_h = dgates[t] W_hh from wp (W_hh
 * packed: depth 4H, H columns). prev (T, B, 2H) holds each step's starting [h | c]. carry_h and
 * carry_c come in as the gradients reaching the last step's output and leave as those of the
 * initial state. */
void K(lstm_seq_bwd)(const real *act, const real *prev, const real *tc, const real *gout, const real *wp,
                     real *carry_h, real *carry_c, real *dgates, int64_t T, int64_t B, int64_t H, int reverse, int nt) {
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? s : T - 1 - s;
        real *dg = dgates + t * B * 4 * H;
        K(lstm_bwd_step)(act + t * B * 4 * H, prev + t * B * 2 * H + H, 2 * H, tc + t * B * H, gout + t * B * 2 * H,
                         carry_h, carry_c, dg, B, H);
        K(gemm_packed)(dg, 4 * H, 1, wp, carry_h, H, B, H, 4 * H, 0, nt);
    }
}

/* cblas_?gemm's interface (row-major, 64-bit integers, CblasTrans = 112) over the tiles above where
 * eager matmul/linear would use them (ops.py's use_tiles: alpha 1, beta 0 or 1, at least `min`
 * multiply-adds, one thread), else the BLAS set by gemm_set_blas. Code that ember.compile generates
 * calls its GEMMs through this function's address (compile/codegen/blas.py), so a compiled program
 * runs the GEMMs eager runs. Packing buffers are per thread, kept and grown as needed (up to 16 MiB). */
typedef void (*K(cblas_t))(int, int, int, int64_t, int64_t, int64_t, real, const real *, int64_t, const real *,
                           int64_t, real, real *, int64_t);
static K(cblas_t) K(gemm_blas);
static int64_t K(gemm_min) = INT64_MAX, K(gemm_serial) = 0;
static __thread real *K(gemm_buf);
static __thread int64_t K(gemm_cap);

/* blas: the fallback cblas_?gemm; minimum: multiply-adds from which the tiles run (INT64_MAX:
 * never); serial: below this many multiply-adds / 64 a GEMM runs on one thread anyway (above it,
 * with more than one OpenMP thread allowed, BLAS's threads run it, as eagerly). */
void K(gemm_set_blas)(void *blas, int64_t minimum, int64_t serial) {
    K(gemm_blas) = (K(cblas_t))blas;
    K(gemm_min) = minimum;
    K(gemm_serial) = serial;
}

void K(gemm_cblas)(int order, int ta, int tb, int64_t M, int64_t N, int64_t Kd, real alpha, const real *A,
                   int64_t lda, const real *B, int64_t ldb, real beta, real *C, int64_t ldc) {
    int64_t work = M * N * Kd;
    int serial = work / 64 < K(gemm_serial);
#ifdef _OPENMP
    serial = serial || omp_get_max_threads() == 1;
#else
    serial = 1;
#endif
    if (order == 101 && alpha == 1 && (beta == 0 || beta == 1) && work > 0 && work >= K(gemm_min) && serial) {
        int64_t kc = Kd < GKC ? Kd : GKC;
        int64_t need = ((N + GNR - 1) / GNR * GNR + GMC) * kc;
        size_t bytes = (size_t)((need * (int64_t)sizeof(real) + 63) / 64 * 64);
        real *buf = K(gemm_buf);
        int own = 0; /* buffers past 16 MiB (a very wide B) are freed after the call, not kept */
        if (need > K(gemm_cap) && bytes > ((size_t)1 << 24)) {
            buf = aligned_alloc(64, bytes);
            own = 1;
        } else if (need > K(gemm_cap)) {
            free(K(gemm_buf));
            buf = K(gemm_buf) = aligned_alloc(64, bytes);
            K(gemm_cap) = buf ? need : 0;
        }
        if (buf) {
            real *bp = buf, *ap = bp + (N + GNR - 1) / GNR * GNR * kc;
            K(gemm)(A, ta == 112 ? 1 : lda, ta == 112 ? lda : 1, B, tb == 112 ? 1 : ldb, tb == 112 ? ldb : 1, C, ldc,
                    M, N, Kd, beta != 0, bp, ap, 1);
            if (own) free(buf);
            return;
        }
    }
    K(gemm_blas)(order, ta, tb, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* C (M x N, row stride ldc) = alpha A B (+ C when acc) for small products (an attention head's, a
 * few hundred thousand multiply-adds, where packing and BLAS's call overhead cost as much as the
 * arithmetic), straight from A (element (m, k) at a[m*rsa + k*csa]) and a row-major B (Kd x N,
 * row stride ldb), N a multiple of GVL. Columns in blocks of up to 4 vectors, rows in blocks of
 * RB, so 16 accumulators stay in registers while B's rows stream from L1. */
#undef GEMM_SMALL_BLOCK
#define GEMM_SMALL_BLOCK(NV, RB)                                                                      \
    for (int64_t i0 = 0; i0 < M; i0 += RB) {                                                       \
        int64_t nm = M - i0 < RB ? M - i0 : RB;                                                    \
        K(gvec) sacc[RB][NV];                                                                      \
        const real *ar[RB];                                                                        \
        for (int r = 0; r < RB; r++) {                                                             \
            ar[r] = a + (i0 + (r < nm ? r : 0)) * rsa;                                             \
            for (int v = 0; v < NV; v++) sacc[r][v] = (K(gvec)){0};                                \
        }                                                                                          \
        for (int64_t k = 0; k < Kd; k++) {                                                         \
            K(gvec) bv[NV];                                                                        \
            for (int v = 0; v < NV; v++) bv[v] = *(const K(guvec) *)(bj + k * ldb + v * GVL);      \
            for (int r = 0; r < RB; r++) {                                                         \
                real s = ar[r][k * csa];                                                           \
                for (int v = 0; v < NV; v++) sacc[r][v] += s * bv[v];                              \
            }                                                                                      \
        }                                                                                          \
        for (int64_t r = 0; r < nm; r++)                                                           \
            for (int v = 0; v < NV; v++) {                                                         \
                K(guvec) *cp = (K(guvec) *)(cj + (i0 + r) * ldc + v * GVL);                        \
                K(gvec) x = alpha * sacc[r][v];                                                    \
                *cp = acc ? *cp + x : x;                                                           \
            }                                                                                      \
    }

void K(gemm_small)(int64_t M, int64_t N, int64_t Kd, real alpha, const real *a, int64_t rsa, int64_t csa,
                   const real *b, int64_t ldb, int acc, real *c, int64_t ldc) {
    for (int64_t j0 = 0; j0 < N; j0 += 4 * GVL) {
        const real *bj = b + j0;
        real *cj = c + j0;
        int64_t nv = (N - j0) / GVL;
        if (nv >= 4) {
            GEMM_SMALL_BLOCK(4, 4)
        } else if (nv == 3) {
            GEMM_SMALL_BLOCK(3, 4)
        } else if (nv == 2) {
            GEMM_SMALL_BLOCK(2, 8)
        } else {
            GEMM_SMALL_BLOCK(1, 8)
        }
    }
}
