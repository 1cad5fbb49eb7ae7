"""``RNN``/``LSTM``/``GRU`` over a :class:`~ember.nn.utils.rnn.PackedSequence`.

The packed batch is padded (time-major, sorted by decreasing length) and each layer and direction
runs the same fused sequence primitive as unpacked input, so the speed is the same. Lengths are
handled by where results are read, never by running the padding into a state:

- forward direction: a sequence's steps precede its padding, so its outputs are exact, and its
  final state is read at step ``length - 1``;
- reverse direction: each sequence is reversed *within its length* (padding stays at the end),
  run forward, and reversed back; its final state is also read at step ``length - 1``.

The result is packed again. ``hx`` and ``h_n`` are in the caller's batch order (permuted by
``sorted_indices`` / ``unsorted_indices``), as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from ember.nn.functional.rnn import _project, recurrent_sequence
from ember.nn.utils.rnn import PackedSequence, _pack_index
from ember.ops.creation import tensor
from ember.ops.movement import cat, stack
from ember.tensor import Tensor

__all__ = ["packed_forward"]


def _padded(packed: PackedSequence, lengths: np.ndarray) -> Tensor:
    """The packed data as a sorted, time-major ``(T, B, I)`` tensor (zeros in the padding)."""
    data = packed.data
    steps, batch = lengths[0], lengths.shape[0]
    index = np.full(steps * batch, data.shape[0], dtype=np.int64)
    index[_pack_index(packed.batch_sizes._data, batch)] = np.arange(data.shape[0])
    zero = data.new_zeros(1, data.shape[1])
    return cat([data, zero], 0)[tensor(index, device=data.device)].reshape(steps, batch, data.shape[1])


def packed_forward(module, packed: PackedSequence, hx):
    """``module(packed, hx)`` for an ``RNNBase`` module: ``(PackedSequence, h_n)`` (LSTM: ``(h_n, c_n)``)."""
    data = packed.data
    if data.dim() != 2:
        raise ValueError(f"{type(module).__name__}: packed input data must be 2-D, got {data.dim()}-D")
    module._check_input(data)
    bs = packed.batch_sizes._data
    lengths = (bs[None, :] > np.arange(int(bs[0]))[:, None]).sum(1)  # sorted order, decreasing
    batch, steps = lengths.shape[0], int(lengths[0])
    x = _padded(packed, lengths)
    sort = packed.sorted_indices
    lstm = module.mode == "LSTM"
    if lstm:
        h0, c0 = (None, None) if hx is None else hx
        h0, c0 = module._hidden(h0, batch, False, x), module._hidden(c0, batch, False, x, "cx")
        if sort is not None and hx is not None:
            h0, c0 = h0.index_select(1, sort), c0.index_select(1, sort)
    else:
        h0 = module._hidden(hx, batch, False, x)
        if sort is not None and hx is not None:
            h0 = h0.index_select(1, sort)
    dev = x.device
    cols = tensor(np.arange(batch), device=dev)
    last = tensor(lengths - 1, device=dev)
    t = np.arange(steps)[:, None]
    rev = tensor(np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t), device=dev)  # (T, B)
    dirs = 2 if module.bidirectional else 1
    mode = "RNN" if module.mode.startswith("RNN") else module.mode
    relu = module.mode == "RNN_RELU"
    finals_h, finals_c, layer_in = [], [], x
    for layer in range(module.num_layers):
        outs = []
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(module._weights()[layer * dirs : (layer + 1) * dirs]):
            hsz = w_hh.shape[1]
            k = layer * dirs + d
            src = layer_in if d == 0 else layer_in[rev, cols]
            state = cat([h0[k], c0[k]], 1) if lstm else h0[k]
            out = recurrent_sequence(mode, _project(src, w_ih, b_ih), state, w_hh, b_hh, relu=relu)
            final = out[last, cols]
            finals_h.append(final[:, :hsz] if lstm else final)
            if lstm:
                finals_c.append(final[:, hsz:])
                out = out[:, :, :hsz]
            outs.append(out if d == 0 else out[rev, cols])
        layer_in = outs[0] if dirs == 1 else cat(outs, 2)
        if module.dropout > 0 and module.training and layer < module.num_layers - 1:
            from ember.nn.functional import dropout

            layer_in = dropout(layer_in, module.dropout, True)
    flat = layer_in.reshape(steps * batch, layer_in.shape[2])
    out_data = flat[tensor(_pack_index(bs, batch), device=dev)]
    output = PackedSequence(out_data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    unsort = packed.unsorted_indices
    h_n = stack(finals_h, 0)
    h_n = h_n if unsort is None else h_n.index_select(1, unsort)
    if lstm:
        c_n = stack(finals_c, 0)
        return output, (h_n, c_n if unsort is None else c_n.index_select(1, unsort))
    return output, h_n
