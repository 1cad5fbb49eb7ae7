"""Argument checks of the normalization and recurrent layers, with PyTorch's messages.

They run before either path (C kernels or NumPy), so a wrong parameter size or dtype raises the
same error whether or not a C compiler exists (the kernels' own boundary checks, in
``backends/ckernels/signatures.py``, are the last line of defence).

Example:
    >>> import ember
    >>> from ember.nn.functional._checks import check_param_dtypes
    >>> check_param_dtypes(ember.ones(2, 3), ember.ones(3))  # same dtype: no error
"""

from __future__ import annotations

from ember import _dtype

__all__ = ["check_param_dtypes", "check_channel_params", "check_group_norm_params", "check_rnn"]

_REDUCED = ("float16", "bfloat16")


def check_param_dtypes(input, *params) -> None:
    """PyTorch's CPU rule for normalization parameters: they share the input's dtype, except that a
    float16/bfloat16 input may take float32 parameters."""
    dt = input.dtype
    for p in params:
        if p is None or p.dtype == dt:
            continue
        if dt.name in _REDUCED and p.dtype == _dtype.float32:
            continue
        if dt == _dtype.float32:
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")


def check_channel_params(input, **params) -> None:
    """batch_norm's per-channel tensors (weight, bias, running_mean, running_var) hold C elements."""
    c = input.shape[1]
    for name, p in params.items():
        if p is not None and p.numel() != c:
            raise RuntimeError(f"{name} should contain {c} elements not {p.numel()}")
    check_param_dtypes(input, *params.values())


def check_group_norm_params(input, weight, bias) -> None:
    c = input.shape[1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.ndim != 1 or p.numel() != c):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
                f"{name} of shape {list(p.shape)} and input of shape {list(input.shape)}"
            )
    check_param_dtypes(input, weight, bias)


def check_rnn(x, states, weights: list, gates: int, hidden_size: int) -> None:
    """A time-major ``x`` (T, B, I), the initial states and each direction's ``(w_ih, w_hh, b_ih,
    b_hh)``: a non-empty sequence, states of the input's dtype, biases of ``gates * hidden``."""
    if x.shape[0] == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    for s in states:
        if s.dtype != x.dtype:
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {_name(s.dtype)} and {_name(x.dtype)}")
    size = gates * hidden_size
    for ws in weights:
        for b in ws[2:]:
            if b is not None and tuple(b.shape) != (size,):
                n = b.shape[-1] if b.ndim else 1
                raise RuntimeError(
                    f"The size of tensor a ({size}) must match the size of tensor b ({n}) at non-singleton dimension 0"
                )


def _name(dt) -> str:
    return {"float64": "Double", "float32": "Float", "float16": "Half", "bfloat16": "BFloat16"}.get(dt.name, dt.name)
