"""``RNN``, ``LSTM``, ``GRU`` and their single-step cells, parameter-compatible with PyTorch.

Parameters are named ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
(``_reverse`` for the backward direction) and drawn from U(-1/sqrt(hidden), 1/sqrt(hidden)), so a
PyTorch state dict loads as is. The computation is in ``ember.nn.functional.rnn``: one fused node
per time step.
"""

from __future__ import annotations

import math
import warnings

from ember.amp.policy import rnn_autocast
from ember.nn import init
from ember.nn.functional._checks import check_rnn
from ember.nn.functional.rnn import _project, gru_step, lstm_step, rnn_sequence, rnn_step
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.ops.creation import empty, zeros
from ember.ops.movement import cat
from ember.tensor import Tensor

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class RNNBase(Module):
    """Shared constructor, parameters and sequence loop of ``RNN``, ``LSTM`` and ``GRU``."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError("hidden_size must be an integer greater than zero")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError("num_layers must be an integer greater than zero")
        if proj_size:
            raise NotImplementedError("LSTM with proj_size > 0 is not supported")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        dirs = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        self._flat_weights_names = []
        for layer in range(num_layers):
            for d in range(dirs):
                in_size = input_size if layer == 0 else hidden_size * dirs
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                shapes = [("weight_ih", (gate, in_size)), ("weight_hh", (gate, hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gate,)), ("bias_hh", (gate,))]
                for name, shape in shapes:
                    setattr(self, name + sfx, Parameter(empty(shape, device=device, dtype=dtype)))
                    self._flat_weights_names.append(name + sfx)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    @property
    def all_weights(self) -> list:
        dirs = 2 if self.bidirectional else 1
        out = []
        for layer in range(self.num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
                out.append([getattr(self, n + sfx) for n in names])
        return out

    def _weights(self) -> list:
        res = []
        for ws in self.all_weights:
            res.append((ws[0], ws[1], ws[2], ws[3]) if self.bias else (ws[0], ws[1], None, None))
        return res

    def _check_input(self, input: Tensor) -> bool:
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
            )
        if input.dtype != self.weight_ih_l0.dtype:
            raise RuntimeError(
                f"{type(self).__name__}: input dtype {input.dtype} and weight dtype {self.weight_ih_l0.dtype} differ"
            )
        return input.dim() == 2

    def _hidden(self, hx, batch: int, unbatched: bool, like: Tensor, what: str = "hx") -> Tensor:
        dirs = 2 if self.bidirectional else 1
        expected = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            return zeros(expected, dtype=like.dtype, device=like.device)
        if unbatched:
            if hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, {what} should also be 2-D but got {hx.dim()}-D tensor")
            hx = hx.unsqueeze(1)
        if tuple(hx.shape) != expected:
            raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.shape)}")
        return hx

    def _run(self, input: Tensor, hx):
        unbatched = self._check_input(input)
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        batch = x.shape[1]
        if self.mode == "LSTM":
            h0, c0 = (None, None) if hx is None else hx
            state = (self._hidden(h0, batch, unbatched, x), self._hidden(c0, batch, unbatched, x, "cx"))
        else:
            state = self._hidden(hx, batch, unbatched, x)
        mode = "RNN" if self.mode.startswith("RNN") else self.mode
        check_rnn(
            x,
            state if self.mode == "LSTM" else (state,),
            self._weights(),
            {"LSTM": 4, "GRU": 3}.get(mode, 1),
            self.hidden_size,
        )
        nonlin = "relu" if self.mode == "RNN_RELU" else "tanh"
        out, h_n = rnn_sequence(
            mode, x, state, self._weights(), self.num_layers, self.bidirectional, self.dropout, self.training, nonlin
        )
        if unbatched:
            out = out.squeeze(1)
            h_n = tuple(h.squeeze(1) for h in h_n) if isinstance(h_n, tuple) else h_n.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, h_n

    def forward(self, input: Tensor, hx=None):
        from ember.nn.utils.rnn import PackedSequence

        if isinstance(input, PackedSequence):
            from ember.nn.modules.rnn_packed import packed_forward

            return packed_forward(self, input, hx)
        return self._run(input, hx)

    def flatten_parameters(self) -> None:
        """A no-op, as PyTorch's on CPU: Ember keeps no flattened cuDNN weight buffer."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    Example:
        >>> import ember
        >>> rnn = ember.nn.RNN(10, 20, 2)
        >>> out, h_n = rnn(ember.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (ember.Size([5, 3, 20]), ember.Size([2, 3, 20]))
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", *args, **kwargs
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers, *args, **kwargs
        )


class LSTM(RNNBase):
    """Long short-term memory (gates i, f, g, o as PyTorch); returns ``(output, (h_n, c_n))``.

    Example:
        >>> import ember
        >>> lstm = ember.nn.LSTM(10, 20, 2, batch_first=True, bidirectional=True)
        >>> out, (h, c) = lstm(ember.randn(3, 5, 10))
        >>> out.shape, h.shape
        (ember.Size([3, 5, 40]), ember.Size([4, 3, 20]))
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """Gated recurrent unit (gates r, z, n as PyTorch); returns ``(output, h_n)``.

    Example:
        >>> import ember
        >>> gru = ember.nn.GRU(10, 20)
        >>> gru(ember.randn(5, 3, 10))[0].shape
        ember.Size([5, 3, 20])
    """

    def __init__(self, *args, **kwargs):
        super().__init__("GRU", *args, **kwargs)


# --------------------------------------------------------------------------- cells
class RNNCellBase(Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device=None, dtype=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(empty((num_chunks * hidden_size, input_size), device=device, dtype=dtype))
        self.weight_hh = Parameter(empty((num_chunks * hidden_size, hidden_size), device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(num_chunks * hidden_size, device=device, dtype=dtype))
            self.bias_hh = Parameter(empty(num_chunks * hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def _prep(self, input: Tensor, hx):
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        return x, unbatched

    def _state(self, hx, x, unbatched):
        if hx is None:
            return zeros((x.shape[0], self.hidden_size), dtype=x.dtype, device=x.device)
        return hx.unsqueeze(0) if unbatched else hx

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return s


class RNNCell(RNNCellBase):
    """One Elman RNN step.

    Example:
        >>> import ember
        >>> ember.nn.RNNCell(10, 20)(ember.randn(3, 10)).shape
        ember.Size([3, 20])
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", device=None, dtype=None
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prep(input, hx)
        h = self._state(hx, x, unbatched)
        (x, h, w_ih, b_ih, w_hh, b_hh), ctx = rnn_autocast(
            "rnn_cell", x, h, self.weight_ih, self.bias_ih, self.weight_hh, self.bias_hh
        )
        with ctx:
            out = rnn_step(_project(x, w_ih, b_ih), h, w_hh, b_hh, self.nonlinearity)
        return out.squeeze(0) if unbatched else out


class LSTMCell(RNNCellBase):
    """One LSTM step; ``hx`` is ``(h, c)``, returns ``(h', c')``.

    Example:
        >>> import ember
        >>> h, c = ember.nn.LSTMCell(10, 20)(ember.randn(3, 10))
        >>> h.shape
        ember.Size([3, 20])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx=None):
        x, unbatched = self._prep(input, hx)
        h, c = (None, None) if hx is None else hx
        (x, h, c, w_ih, b_ih, w_hh, b_hh), ctx = rnn_autocast(
            "lstm_cell",
            x,
            self._state(h, x, unbatched),
            self._state(c, x, unbatched),
            self.weight_ih,
            self.bias_ih,
            self.weight_hh,
            self.bias_hh,
        )
        with ctx:
            out = lstm_step(_project(x, w_ih, b_ih), cat([h, c], 1), w_hh, b_hh)
        h2, c2 = out[:, : self.hidden_size], out[:, self.hidden_size :]
        return (h2.squeeze(0), c2.squeeze(0)) if unbatched else (h2, c2)


class GRUCell(RNNCellBase):
    """One GRU step.

    Example:
        >>> import ember
        >>> ember.nn.GRUCell(10, 20)(ember.randn(3, 10)).shape
        ember.Size([3, 20])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._prep(input, hx)
        h = self._state(hx, x, unbatched)
        (x, h, w_ih, b_ih, w_hh, b_hh), ctx = rnn_autocast(
            "gru_cell", x, h, self.weight_ih, self.bias_ih, self.weight_hh, self.bias_hh
        )
        with ctx:
            out = gru_step(_project(x, w_ih, b_ih), h, w_hh, b_hh)
        return out.squeeze(0) if unbatched else out
