"""Each C kernel's signature, declared once, and the one boundary that checks every call against it.

A kernel receives raw pointers, so a buffer shorter than the sizes it is told would be read or
written out of bounds. Every ctypes entry point is declared here as a string of its parameters in
C order; :class:`Kernel` checks each buffer before the call (a NumPy array of the right dtype,
C-contiguous, writable when the kernel writes it, and of the length the other arguments imply)
and only then passes pointers, as PyTorch's ``TORCH_CHECK``s at the top of an ATen kernel do.

Parameter syntax (space-separated, in C order):

- ``rows``: an ``int64_t`` scalar; ``nt:int`` a C ``int``; ``eps:dbl`` a ``double``.
- ``x[rows*cols]``: a buffer of the kernel's dtype holding exactly ``rows*cols`` elements.
- ``xp[>expr]``: a buffer of which the kernel touches the first ``expr`` elements (it may be larger).
- ``!`` before the name: the kernel writes it; ``?`` after the name: it may be None (NULL);
  ``:i64`` / ``:f64`` after the name: a fixed dtype (int64 indices, float64 scratch).
- A buffer may be passed as ``(array, offset)``: the kernel starts ``offset`` elements in, and
  those elements plus the declared extent must lie inside the array.

``REQUIRES`` adds conditions between scalars (``OB`` is the kernel's register block of output
channels, ``64 / itemsize``; the convolutions may take blocks of ``2 * OB``).

Example:
    >>> import numpy as np
    >>> from ember.backends.ckernels.signatures import KERNELS
    >>> KERNELS["softmax_fwd"].params[0].extent_src
    'rows*cols'
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = ["DECLARATIONS", "KERNELS", "SIGNATURES", "Kernel", "Signature"]

DECLARATIONS = {
    "softmax_fwd": "x[rows*cols] !y[rows*cols] rows cols log:int nt:int",
    "softmax_bwd": "y[rows*cols] grad[rows*cols] !grad_input[rows*cols] rows cols log:int nt:int",
    "layer_norm_fwd": "x[rows*cols] weight?[cols] bias?[cols] !y[rows*cols] !mean[rows] !rstd[rows] "
    "rows cols eps:dbl nt:int",
    "layer_norm_bwd": "x[rows*cols] weight?[cols] grad[rows*cols] mean[rows] rstd[rows] !grad_input?[rows*cols] "
    "!grad_weight?[nchunks*cols] !grad_bias?[nchunks*cols] rows cols nchunks:int",
    "batch_norm_fwd": "x[n*c*l] weight?[c] bias?[c] !y[n*c*l] !mean[c] !var[c] !rstd[c] n c l eps:dbl "
    "!scratch:f64[2*c] nt:int",
    "batch_norm_bwd": "x[n*c*l] grad[n*c*l] weight?[c] mean[c] rstd[c] !grad_input?[n*c*l] !grad_weight?[c] "
    "!grad_bias?[c] n c l !scratch:f64[2*c] nt:int",
    "lstm_fwd_step": "gates[B*4*H] bias?[4*H] hh[B*4*H] c[>(B-1)*c_stride+H] c_stride !act[B*4*H] "
    "!out[B*2*H] !tc[B*H] B H",
    "lstm_bwd_step": "act[B*4*H] c[>(B-1)*c_stride+H] c_stride tc[B*H] grad[B*2*H] carry_h[B*H] "
    "!carry_c[B*H] !dgates[B*4*H] B H",
    "gelu_fwd": "x[n] !y[n] n tanh:int nt:int",
    "gelu_bwd": "x[n] grad[n] !grad_input[n] n tanh:int nt:int",
    "pack_nhwc": "src[N*C*H*W] !dst[N*Hd*Wd*Cd] N C H W Hd Wd Cd oy ox nt:int",
    "conv_fwd": "xp[>((N-1)*Hp*Wp+((Ho-1)*sh+(kh-1)*dh)*Wp+(Wo-1)*sw+(kw-1)*dw+1)*C] weight[Op*kh*kw*C] bias?[O] "
    "!out[>(N*O-1)*plane+(Ho-1)*o_row+(Wo-1)*o_col+1] N Hp Wp C Ho Wo O Op ob kh kw sh sw dh dw plane o_row o_col "
    "nt:int",
    "conv_wgrad": "xp[>((N-1)*Hp*Wp+((Ho-1)*sh+(kh-1)*dh)*Wp+(Wo-1)*sw+(kw-1)*dw+1)*Cp] "
    "grad[>(N-1)*g_img+(Ho-1)*g_row+Wo*Op] !grad_weight[nt*kh*kw*Cp*Op] "
    "N Hp Wp Cp Ho Wo Op ob g_img g_row kh kw sh sw dh dw nt:int",
    "max_pool2d_fwd": "x[P*H*W] !out[P*Ho*Wo] !indices:i64[P*Ho*Wo] P H W Ho Wo kh kw sh sw ph pw dh dw nt:int",
    "max_pool2d_bwd": "grad[P*Q] indices:i64[P*Q] !grad_input[P*HW] P HW Q nt:int",
    "gemm_pack_b": "b[>(K-1)*rsb+(N-1)*csb+1] rsb csb K N !bp[-(-N//(2*OB))*2*OB*K]",
    "gemm": "a[>(M-1)*rsa+(K-1)*csa+1] rsa csa b[>(K-1)*rsb+(N-1)*csb+1] rsb csb !c[>(M-1)*ldc+N] ldc M N K "
    "acc:int !bp[>-(-N//(2*OB))*2*OB*min(K,256)] !ap[>128*min(K,256)] nt:int",
    "lstm_seq_fwd": "gi[T*B*4*H] bias?[4*H] wp[-(-4*H//(2*OB))*2*OB*H] state[>(B-1)*s_stride+2*H] s_stride !act[T*B*4*H] "
    "!out[T*B*2*H] !tc[T*B*H] !hh[B*4*H] T B H reverse:int nt:int",
    "lstm_seq_bwd": "act[T*B*4*H] prev[T*B*2*H] tc[T*B*H] grad[T*B*2*H] wp[-(-H//(2*OB))*2*OB*4*H] !carry_h[B*H] !carry_c[B*H] "
    "!dgates[T*B*4*H] T B H reverse:int nt:int",
}

REQUIRES = {  # conditions between scalars that the extents alone do not cover
    "pack_nhwc": ["C <= Cd"],
    "conv_fwd": ["O <= Op", "ob == OB or ob == 2 * OB", "Op % ob == 0", "Ho >= 1", "Wo >= 1"],
    "conv_wgrad": ["Cp % 4 == 0", "ob == OB or ob == 2 * OB", "Op % ob == 0", "Ho >= 1", "Wo >= 1"],
    "lstm_fwd_step": ["c_stride >= H"],
    "lstm_bwd_step": ["c_stride >= H"],
    "gemm_pack_b": ["min(K, N) >= 1", "min(rsb, csb) >= 0"],
    "gemm": ["min(M, N, K) >= 1", "min(rsa, csa, rsb, csb) >= 0", "ldc >= N"],
    "lstm_seq_fwd": ["s_stride >= 2 * H", "min(T, B, H) >= 1"],
    "lstm_seq_bwd": ["min(T, B, H) >= 1"],
}

_CTYPES = {"": ctypes.c_int64, "int": ctypes.c_int, "dbl": ctypes.c_double}
_FIXED = {"i64": np.dtype(np.int64), "f64": np.dtype(np.float64)}
_SAFE = {"__builtins__": {}, "min": min}


class Param:
    """One parameter: a scalar (``extent`` None) or a buffer."""

    __slots__ = ("name", "ctype", "extent_src", "extent", "exact", "written", "optional", "dtype")

    def __init__(self, text: str):
        self.written = text.startswith("!")
        text = text.lstrip("!")
        if "[" not in text:
            name, _, kind = text.partition(":")
            self.name, self.ctype, self.extent_src, self.extent = name, _CTYPES[kind], None, None
            self.exact = self.optional = False
            self.dtype = None
            return
        head, _, size = text.partition("[")
        size = size.rstrip("]")
        self.exact = not size.startswith(">")
        self.extent_src = size.lstrip(">")
        name, _, fixed = head.partition(":")
        self.optional = name.endswith("?")
        self.name = name.rstrip("?")
        self.dtype = _FIXED[fixed] if fixed else None  # None: the kernel's own dtype
        self.ctype = ctypes.c_void_p
        self.extent = None  # set by Signature: a function of the kernel's scalars


def _function_of(names: list, expr: str):
    """``expr`` as a function of the scalars ``names`` (and ``OB``), compiled once."""
    return eval(f"lambda {', '.join([*names, 'OB'])}: {expr}", _SAFE)  # a constant of this file


class Signature:
    """A kernel's parameters in C order, parsed from its declaration."""

    def __init__(self, name: str, declaration: str, requires=()):
        self.name = name
        self.params = [Param(p) for p in declaration.split()]
        self.argtypes = [p.ctype for p in self.params]
        self.scalars = [i for i, p in enumerate(self.params) if p.extent_src is None]
        names = [self.params[i].name for i in self.scalars]
        for p in self.params:
            if p.extent_src is not None:
                p.extent = _function_of(names, p.extent_src)
        self.requires = [(r, _function_of(names, r)) for r in requires]


KERNELS = {name: Signature(name, decl, REQUIRES.get(name, ())) for name, decl in DECLARATIONS.items()}
SIGNATURES = {name: sig.argtypes for name, sig in KERNELS.items()}  # symbol -> ctypes argtypes


class Kernel:
    """A loaded kernel for one dtype: calling it checks every argument, then calls the C function.

    ``check(*args)`` validates and returns the raw ctypes arguments without calling, for a
    caller that validated the largest of a series of calls (the LSTM time loop) and then calls
    ``raw`` directly.
    """

    __slots__ = ("sig", "raw", "dtype", "symbol", "_ob")

    def __init__(self, sig: Signature, raw, dtype: np.dtype, symbol: str):
        self.sig, self.raw, self.dtype, self.symbol = sig, raw, np.dtype(dtype), symbol
        self._ob = 64 // self.dtype.itemsize

    def __call__(self, *args):
        self.raw(*self.check(*args))

    def check(self, *args) -> list:
        sig = self.sig
        if len(args) != len(sig.params):
            raise TypeError(f"{self.symbol}: expected {len(sig.params)} arguments, got {len(args)}")
        scalars = []
        for i in sig.scalars:
            v = args[i]
            if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
                raise TypeError(
                    f"{self.symbol}: argument '{sig.params[i].name}' must be a number, not {type(v).__name__}"
                )
            scalars.append(v)
        scalars.append(self._ob)
        for text, holds in sig.requires:
            if not holds(*scalars):
                env = {sig.params[i].name: v for i, v in zip(sig.scalars, scalars)}
                raise RuntimeError(f"{self.symbol}: expected {text}, got {_show(text, env)}")
        return [a if p.extent is None else self._pointer(p, a, scalars) for p, a in zip(sig.params, args)]

    def _pointer(self, p: Param, a, scalars: list):
        if a is None:
            if p.optional:
                return None
            raise RuntimeError(f"{self.symbol}: {p.name} must not be None")
        offset, part = 0, isinstance(a, tuple)  # a part: the kernel reads from an offset in a larger array
        if part:
            a, offset = a
        if type(a) is not np.ndarray:
            raise TypeError(f"{self.symbol}: {p.name} must be a NumPy array, not {type(a).__name__}")
        want = p.dtype or self.dtype
        if a.dtype is not want and a.dtype != want:
            raise RuntimeError(f"{self.symbol}: expected {p.name} to have dtype {want}, but got {a.dtype}")
        flags = a.flags
        if not flags.c_contiguous:
            raise RuntimeError(f"{self.symbol}: {p.name} must be contiguous")
        if p.written and not flags.writeable:
            raise RuntimeError(f"{self.symbol}: {p.name} is read-only, but the kernel writes it")
        need = p.extent(*scalars)
        have = a.size - offset
        exact = p.exact and not part
        if offset < 0 or need < 0 or (have != need if exact else have < need):
            if exact:
                raise RuntimeError(f"{p.name} should contain {need} elements not {a.size}")
            raise RuntimeError(
                f"{self.symbol}: {p.name} should contain at least {need} elements from offset {offset}, but has {have}"
            )
        return a.ctypes.data + offset * a.itemsize


def _show(text: str, env: dict) -> str:
    names = [n for n in env if n in text]
    return ", ".join(f"{n}={env[n]}" for n in names)
