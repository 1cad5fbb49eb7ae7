/* Branch-free float32 exp, erf and tanh that the compiler can vectorize (glibc's expf/erff are
 * scalar calls unless -ffast-math). Float64 kernels use libm's exp/erf/tanh instead. NaN flows
 * through every function unchanged (every clamp is a comparison that is false for NaN). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 16

typedef union { float f; int32_t i; } f32bits;

/* exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2, exp(r) by the Cephes polynomial
 * (about 1 ulp). 2^n is applied as two factors so results in the denormal range stay right;
 * x is clamped to [-104, 88.8], where exp is 0 or +inf in float32 anyway. */
static inline float exp_f32(float x) {
    float xc = x > 88.8f ? 88.8f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    f32bits t = {.f = xc * 1.44269504088896341f + 12582912.0f}; /* 1.5 * 2^23: rounds n */
    float n = t.f - 12582912.0f;
    int32_t ni = t.i - 0x4B400000, n1 = ni / 2, n2 = ni - n1;
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    f32bits s1 = {.i = (n1 + 127) << 23}, s2 = {.i = (n2 + 127) << 23};
    return e * s1.f * s2.f;
}

/* erf(x) as an odd/even rational polynomial on [-4, 4] (Eigen's float erf, < 5e-7 absolute
 * error); outside that range erf is +-1 in float32. */
static inline float erf_f32(float x) {
    float xc = x > 4.0f ? 4.0f : x;
    xc = xc < -4.0f ? -4.0f : xc;
    float x2 = xc * xc;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return xc * p / q;
}

/* tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at +-inf, absolute error ~1e-7 near 0. */
static inline float tanh_f32(float x) {
    return 1.0f - 2.0f / (exp_f32(2.0f * x) + 1.0f);
}

/* 1 when built with OpenMP: the Python side then passes thread counts above 1 for large inputs. */
int ember_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
