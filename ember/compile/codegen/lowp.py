"""bfloat16 / float16 in fused kernels: stored as 16 bits, computed in float32.

A fused group of a 2-byte float dtype takes ``uint16_t`` buffers. Each element is widened to
float when it is read (bfloat16: its 16 bits become the high half of a float32; float16: a
``_Float16`` cast where the CPU converts vectors of it (AVX512-FP16), else branch-free bit arithmetic; CUDA: the PTX
``cvt`` instructions), the whole chain runs in float32 (reductions accumulate in double as for
float32 groups), and each output is rounded once, to nearest even, when it is stored. The
bfloat16 rounding is the usual bias-and-shift with NaN kept NaN (a quiet NaN of the same sign),
bit for bit ml_dtypes' ``np.asarray(x, ml_dtypes.bfloat16)``.

Eager Ember rounds after every op (each NumPy op on these dtypes widens, computes and rounds),
so a fused chain is at least as accurate and may differ from eager by a few ulps.

Example:
    >>> from ember.compile.codegen.lowp import is_low, load, store
    >>> is_low("bfloat16"), load("bfloat16", "in0[i]"), store("float16", "t3")
    (True, 'ember_ld_bf16(in0[i])', 'ember_st_f16(t3)')
"""

from __future__ import annotations

__all__ = ["LOW", "is_low", "compute_name", "load", "store", "C_PRELUDE", "CUDA_PRELUDE"]

LOW = {"bfloat16": "bf16", "float16": "f16"}


def _name(dtype) -> str:
    name = getattr(dtype, "name", None)  # (an ember dtype's name: what its str() gives, less "ember.")
    return name if type(name) is str else str(dtype).replace("ember.", "")


def is_low(dtype) -> bool:
    """Whether ``dtype`` (an ember dtype or its name) is stored as 16 bits and computed in float."""
    return _name(dtype) in LOW


def compute_name(dtype) -> str:
    """The dtype a group of ``dtype`` computes in: float32 for the 2-byte floats."""
    return "float32" if is_low(dtype) else _name(dtype)


def load(dtype, x: str) -> str:
    """The expression reading element ``x`` of a buffer of ``dtype`` as its compute type."""
    return f"ember_ld_{LOW[_name(dtype)]}({x})" if is_low(dtype) else x


def store(dtype, x: str) -> str:
    """The expression rounding compute value ``x`` to the storage type of ``dtype``."""
    return f"ember_st_{LOW[_name(dtype)]}({x})" if is_low(dtype) else x


# Shared by C and CUDA (``EMBER_INLINE`` and the bit casts differ). bfloat16 -> float is exact;
# float -> bfloat16 adds 0x7fff plus the lowest kept bit (ties go to even), and keeps NaN a
# quiet NaN (the carry could otherwise turn a NaN with low payload bits into infinity).
_BF16 = r"""
EMBER_INLINE float ember_ld_bf16(uint16_t h) { return EMBER_U2F((uint32_t)h << 16); }
EMBER_INLINE uint16_t ember_st_bf16(float f) {
    uint32_t u = EMBER_F2U(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : r);
}
"""

# float16 by bit arithmetic, branch-free so that loops over it vectorize (GCC 12 does not vectorize
# ``_Float16`` conversions without AVX512-FP16). Widening: the 15 magnitude bits shifted to a float's
# place and scaled by 2^112 (exact for normals and subnormals), infinity/NaN given the full
# exponent. Narrowing (round to nearest even): subnormal results by one float addition of a magic
# number (the FPU rounds), normal ones by bias-and-shift; overflow to infinity, NaN kept quiet.
_F16_BITS = r"""
EMBER_INLINE float ember_ld_f16(uint16_t h) {
    uint32_t a = (uint32_t)(h & 0x7fffu) << 13;
    float v = EMBER_U2F(a) * 5.192296858534828e+33f; /* 2^112 */
    uint32_t u = EMBER_F2U(v) | ((h & 0x7c00u) == 0x7c00u ? 0x7f800000u : 0u);
    return EMBER_U2F(u | ((uint32_t)(h & 0x8000u) << 16));
}
EMBER_INLINE uint16_t ember_st_f16(float f) {
    uint32_t u = EMBER_F2U(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;               /* NaN, or infinity */
    uint32_t sub = EMBER_F2U(EMBER_U2F(a) + 0.5f) - 0x3f000000u;      /* < 2^-14: the FPU rounds */
    uint32_t nrm = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;         /* rebias, round, shift */
    uint32_t r = a >= 0x47800000u ? big : (a < 0x38800000u ? sub : nrm);
    return (uint16_t)(s | r);
}
"""

C_PRELUDE = (
    r"""
/* bfloat16 / float16 storage (codegen/lowp.py) */
#include <stdlib.h>
#define EMBER_INLINE static inline
static inline float EMBER_U2F(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t EMBER_F2U(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
"""
    + _BF16
    + r"""
#if defined(__AVX512FP16__) && !defined(EMBER_NO_FLOAT16)
static inline float ember_ld_f16(uint16_t h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
static inline uint16_t ember_st_f16(float f) { _Float16 x = (_Float16)f; uint16_t h; memcpy(&h, &x, 2); return h; }
#else
"""
    + _F16_BITS
    + "#endif\n"
)

# NVRTC without headers: integer types, bit casts, and the PTX conversions for float16.
CUDA_PRELUDE = (
    r"""
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
#define EMBER_INLINE static __device__ __forceinline__
#define EMBER_U2F(u) __uint_as_float(u)
#define EMBER_F2U(f) __float_as_uint(f)
"""
    + _BF16
    + r"""
EMBER_INLINE float ember_ld_f16(uint16_t h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
EMBER_INLINE uint16_t ember_st_f16(float f) { uint16_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
"""
)
