"""bfloat16 / float16 in fused kernels: stored as 16 bits, computed in float32.

A fused group of a 2-byte float dtype takes ``uint16_t`` buffers. Each element is widened to
float when it is read (bfloat16: its 16 bits become the high half of a float32; float16: a
``_Float16`` cast where the C compiler has the type, else bit arithmetic; CUDA: the PTX
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
    return str(dtype).replace("ember.", "")


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

# float16 without a native type: exact widening, and round-to-nearest-even narrowing (normal,
# subnormal, overflow to infinity, NaN kept quiet).
_F16_BITS = r"""
EMBER_INLINE float ember_ld_f16(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return EMBER_U2F(s | 0x7f800000u | (m << 13));
    if (e == 0) return EMBER_U2F(s) + (s ? -1.0f : 1.0f) * (float)m * 5.9604644775390625e-8f;
    return EMBER_U2F(s | ((e + 112u) << 23) | (m << 13));
}
EMBER_INLINE uint16_t ember_st_f16(float f) {
    uint32_t u = EMBER_F2U(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00u); /* rounds past 65504: infinity */
    if (a < 0x38800000u) {                                 /* subnormal or zero */
        float v = EMBER_U2F(a) * 16777216.0f;              /* exact; rounds like the hardware */
        return (uint16_t)(s | (uint32_t)__builtin_rintf(v));
    }
    uint32_t r = a + 0x0fffu + ((a >> 13) & 1u) - (112u << 23);
    return (uint16_t)(s | (r >> 13));
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
#if defined(__FLT16_MAX__) && !defined(EMBER_NO_FLOAT16)
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
