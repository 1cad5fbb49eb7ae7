"""Variable-length sequences: padding and packing, as ``torch.nn.utils.rnn``.

A :class:`PackedSequence` stores a batch of sequences sorted by decreasing length, time step by
time step: ``data`` holds the ``batch_sizes[0]`` first elements, then the ``batch_sizes[1]``
second elements, and so on, so no padding is stored. ``sorted_indices`` maps the sorted order back
to the caller's batch order (``unsorted_indices`` is its inverse). ``nn.RNN``/``LSTM``/``GRU``
accept one and return one. Packing and padding are gathers (advanced indexing), so gradients flow
through them.

Example:
    >>> import ember
    >>> from ember.nn.utils.rnn import pack_sequence, pad_packed_sequence
    >>> packed = pack_sequence([ember.tensor([1.0, 2.0]), ember.tensor([3.0, 4.0, 5.0])], enforce_sorted=False)
    >>> packed.data.tolist(), packed.batch_sizes.tolist()
    ([3.0, 1.0, 4.0, 2.0, 5.0], [2, 2, 1])
    >>> padded, lengths = pad_packed_sequence(packed, batch_first=True)
    >>> padded.tolist(), lengths.tolist()
    ([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]], [2, 3])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ember._dtype import float32, float64
from ember.ops.creation import full, tensor
from ember.ops.movement import cat
from ember.tensor import Tensor

__all__ = [
    "PackedSequence",
    "pad_sequence",
    "unpad_sequence",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "pack_sequence",
    "unpack_sequence",
    "invert_permutation",
]


class PackedSequence(NamedTuple):
    """``(data, batch_sizes, sorted_indices, unsorted_indices)``; build it with the pack functions."""

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None = None
    unsorted_indices: Tensor | None = None

    def to(self, *args, **kwargs) -> PackedSequence:
        """``data.to(...)``; the index tensors follow ``data``'s device and stay int64."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        dev = data.device
        idx = [None if t is None else t.to(device=dev) for t in (self.sorted_indices, self.unsorted_indices)]
        return PackedSequence(data, self.batch_sizes, idx[0], idx[1])

    def cpu(self) -> PackedSequence:
        return self.to("cpu")

    def cuda(self, *args, **kwargs) -> PackedSequence:
        return self.to("cuda")

    def double(self) -> PackedSequence:
        return self.to(dtype=float64)

    def float(self) -> PackedSequence:
        return self.to(dtype=float32)

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda

    def is_pinned(self) -> bool:
        return False


def invert_permutation(permutation: Tensor | None) -> Tensor | None:
    """The inverse of an index permutation (None stays None)."""
    if permutation is None:
        return None
    p = permutation._data
    inv = np.empty_like(p)
    inv[p] = np.arange(p.shape[0], dtype=p.dtype)
    return tensor(inv, device=permutation.device)


def pad_sequence(
    sequences, batch_first: bool = False, padding_value: float = 0.0, padding_side: str = "right"
) -> Tensor:
    """Stack sequences of shape ``(L_i, *)`` into ``(T, B, *)`` (``(B, T, *)`` with ``batch_first``),
    padding the shorter ones with ``padding_value`` on the ``padding_side``.

    Example:
        >>> import ember
        >>> from ember.nn.utils.rnn import pad_sequence
        >>> pad_sequence([ember.ones(2), ember.ones(1)], batch_first=True).tolist()
        [[1.0, 1.0], [1.0, 0.0]]
    """
    if padding_side not in ("left", "right"):
        raise RuntimeError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    seqs = list(sequences)
    if not seqs:
        raise RuntimeError("received an empty list of sequences")
    longest = max(s.shape[0] for s in seqs)
    trailing = tuple(seqs[0].shape[1:])
    rows = []
    for s in seqs:
        if tuple(s.shape[1:]) != trailing:
            raise RuntimeError(
                f"pad_sequence: all sequences must have the same trailing shape, got {list(trailing)} and "
                f"{list(s.shape[1:])}"
            )
        pad = longest - s.shape[0]
        if pad:
            filler = full((pad,) + trailing, padding_value, dtype=s.dtype, device=s.device)
            s = cat([s, filler] if padding_side == "right" else [filler, s], 0)
        rows.append(s.unsqueeze(0 if batch_first else 1))
    return cat(rows, 0 if batch_first else 1)


def unpad_sequence(padded_sequences: Tensor, lengths: Tensor, batch_first: bool = False) -> list:
    """The inverse of ``pad_sequence`` (right padding): a list of ``(L_i, *)`` tensors."""
    x = padded_sequences if batch_first else padded_sequences.transpose(0, 1)
    return [x[i, : int(n)] for i, n in enumerate(_lengths_list(lengths))]


def _lengths_list(lengths) -> list:
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point():
            return [int(v) for v in lengths.tolist()]
        return lengths.tolist()
    return [int(v) for v in lengths]


def _pack_index(batch_sizes: np.ndarray, batch: int) -> np.ndarray:
    """Rows of a time-major ``(T * batch, ...)`` array that make up the packed data, in order."""
    return np.concatenate([t * batch + np.arange(n) for t, n in enumerate(batch_sizes)]).astype(np.int64)


def pack_padded_sequence(input: Tensor, lengths, batch_first: bool = False, enforce_sorted: bool = True):
    """Pack a padded batch ``(T, B, *)`` (``(B, T, *)`` with ``batch_first``) of sequences of ``lengths``.

    With ``enforce_sorted`` the lengths must decrease; otherwise the batch is sorted here and the
    permutation kept in the result.
    """
    lens = np.asarray(_lengths_list(lengths), dtype=np.int64)
    batch = input.shape[0 if batch_first else 1]
    if lens.shape[0] != batch:
        raise RuntimeError(
            f"Expected `len(lengths)` to be equal to batch_size, but got {lens.shape[0]} (batch_size={batch})"
        )
    if (lens <= 0).any():
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
        )
    steps = input.shape[1 if batch_first else 0]
    if lens.max() > steps:
        raise RuntimeError(
            f"pack_padded_sequence: a length ({int(lens.max())}) exceeds the padded sequence length ({steps})"
        )
    sorted_indices = None
    if enforce_sorted:
        if (np.diff(lens) > 0).any():
            raise RuntimeError(
                "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
                "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this requirement "
                "if you do not need ONNX exportability."
            )
    else:
        order = np.argsort(-lens, kind="stable")
        sorted_indices = tensor(order, device=input.device)
        lens = lens[order]
        input = input.index_select(0 if batch_first else 1, sorted_indices)
    if batch_first:
        input = input.transpose(0, 1)
    batch_sizes = (lens[None, :] > np.arange(int(lens[0]))[:, None]).sum(1).astype(np.int64)
    flat = input.reshape((steps * batch,) + tuple(input.shape[2:]))
    data = flat[tensor(_pack_index(batch_sizes, batch), device=input.device)]
    return PackedSequence(data, tensor(batch_sizes), sorted_indices, invert_permutation(sorted_indices))


def pad_packed_sequence(
    sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0, total_length: int | None = None
) -> tuple:
    """Undo packing: ``(padded, lengths)`` in the original batch order; ``total_length`` pads further."""
    data, bs = sequence.data, sequence.batch_sizes._data
    steps, batch = bs.shape[0], int(bs[0])
    if total_length is not None:
        if total_length < steps:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence in input, but got "
                f"total_length={total_length} and max sequence length being {steps}"
            )
        steps = total_length
    # Every padded slot reads the packed row it came from, or one extra row holding padding_value.
    index = np.full(steps * batch, data.shape[0], dtype=np.int64)
    index[_pack_index(bs, batch)] = np.arange(data.shape[0])
    filler = full((1,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype, device=data.device)
    padded = cat([data, filler], 0)[tensor(index, device=data.device)]
    padded = padded.reshape((steps, batch) + tuple(data.shape[1:]))
    lengths = (bs[None, :] > np.arange(batch)[:, None]).sum(1).astype(np.int64)
    if sequence.unsorted_indices is not None:
        padded = padded.index_select(1, sequence.unsorted_indices)
        lengths = lengths[sequence.unsorted_indices._data]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, tensor(lengths)


def pack_sequence(sequences, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of ``(L_i, *)`` tensors (longest first unless ``enforce_sorted=False``)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list:
    """The inverse of ``pack_sequence``: the list of ``(L_i, *)`` tensors in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
