"""``ConvTranspose1d`` and ``ConvTranspose2d``: PyTorch's constructor, initialization and names.

``forward(input, output_size=None)``: a strided transposed convolution can produce several
output sizes (all map back to the input's size under the matching convolution); ``output_size``
picks one, as in PyTorch, by choosing ``output_padding``.
"""

from __future__ import annotations

import math

from ember.nn import init
from ember.nn.functional.conv_transpose import conv_transpose1d, conv_transpose2d
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.ops.creation import empty
from ember.tensor import Tensor

__all__ = ["ConvTranspose1d", "ConvTranspose2d"]


def _ntuple(v, n: int) -> tuple:
    return tuple(int(e) for e in v) if isinstance(v, (tuple, list)) else (int(v),) * n


class _ConvTransposeNd(Module):
    _nd = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        nd = self._nd
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__}: padding must be an int or a tuple, not {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, nd)
        self.stride = _ntuple(stride, nd)
        self.padding = _ntuple(padding, nd)
        self.dilation = _ntuple(dilation, nd)
        self.output_padding = _ntuple(output_padding, nd)
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = True
        # (C_in, C_out / groups, *kernel): the transpose of a convolution's weight layout.
        shape = (in_channels, out_channels // groups) + self.kernel_size
        self.weight = Parameter(empty(shape, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As PyTorch's _ConvNd: fan_in is read from weight.shape[1:] (C_out / groups * kernel).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _output_padding(self, input: Tensor, output_size) -> tuple:
        """The ``output_padding`` that makes the output ``output_size`` (PyTorch's rule and error)."""
        if output_size is None:
            return self.output_padding
        nd = self._nd
        output_size = [int(s) for s in output_size]
        has_batch = input.dim() == nd + 2
        if len(output_size) == nd + (2 if has_batch else 1):
            output_size = output_size[-nd:]
        if len(output_size) != nd:
            raise ValueError(
                f"ConvTranspose{nd}D: for {input.dim()}D input, output_size must have {nd} or "
                f"{nd + (2 if has_batch else 1)} elements (got {len(output_size)})"
            )
        spatial = list(input.shape[-nd:])
        mins = [
            (spatial[d] - 1) * self.stride[d] - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1) + 1
            for d in range(nd)
        ]
        maxs = [mins[d] + self.stride[d] - 1 for d in range(nd)]
        for d in range(nd):
            if not mins[d] <= output_size[d] <= maxs[d]:
                raise ValueError(
                    f"requested an output size of {output_size}, but valid sizes range from {mins} to {maxs} "
                    f"(for an input of ember.Size({spatial}))"
                )
        return tuple(output_size[d] - mins[d] for d in range(nd))

    def extra_repr(self) -> str:
        nd = self._nd
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over ``(N, C_in, H, W)``: the gradient of ``Conv2d`` as a layer.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, output_padding (extra rows and
        columns at the bottom/right, smaller than stride or dilation), groups, bias, dilation:
        as in PyTorch. ``weight`` is ``(C_in, C_out / groups, kh, kw)``.

    Example:
        >>> import ember
        >>> m = ember.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        >>> m(ember.randn(2, 16, 7, 7)).shape
        ember.Size([2, 8, 14, 14])
    """

    _nd = 2

    def forward(self, input: Tensor, output_size=None) -> Tensor:
        op = self._output_padding(input, output_size)
        return conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, op, self.groups, self.dilation
        )


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over ``(N, C_in, L)``.

    Example:
        >>> import ember
        >>> m = ember.nn.ConvTranspose1d(4, 2, 3, stride=2)
        >>> m(ember.randn(1, 4, 5)).shape
        ember.Size([1, 2, 11])
    """

    _nd = 1

    def forward(self, input: Tensor, output_size=None) -> Tensor:
        op = self._output_padding(input, output_size)
        return conv_transpose1d(
            input, self.weight, self.bias, self.stride, self.padding, op, self.groups, self.dilation
        )
