"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzipped, with strict checks.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian. Every way a file can be
wrong (missing, not gzip after all, truncated, bad CRC, bad magic, unexpected dimensions, payload
longer or shorter than the header says) raises an error that names the file and what was expected.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["IDXFormatError", "read_bytes", "parse_idx", "read_idx", "write_idx"]

# IDX type code -> big-endian NumPy dtype.
_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file whose content is not what its header, or the caller, says it should be."""


def read_bytes(path: str) -> bytes:
    """The file's content, gunzipped when it is a gzip file (detected by content, not by name)."""
    with open(path, "rb") as f:  # FileNotFoundError names the path
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (bad CRC, length) is an OSError
        raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def parse_idx(raw: bytes, path: str, expected_shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``expected_shape`` may use None for "any".

    Example:
        >>> import numpy as np
        >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
        >>> parse_idx(raw, "labels", (None,))
        array([7, 8, 9], dtype=uint8)
    """
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header (expected at least 4)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise IDXFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with type TT in "
            f"{[hex(t) for t in _TYPES]}); is this an IDX file?"
        )
    dtype, ndim = _TYPES[raw[2]], raw[3]
    if expected_shape is not None and ndim != len(expected_shape):
        raise IDXFormatError(f"{path}: IDX file has {ndim} dimensions, expected {len(expected_shape)}")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise IDXFormatError(f"{path}: truncated header: {len(raw)} bytes, expected {head} for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if expected_shape is not None:
        for got, want in zip(shape, expected_shape):
            if want is not None and got != want:
                raise IDXFormatError(f"{path}: IDX dimensions {shape}, expected {expected_shape} (None: any)")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - head
    if payload != expected:
        raise IDXFormatError(
            f"{path}: header declares shape {shape} ({expected} bytes of data) but the file holds {payload} "
            f"bytes after the header: {'truncated' if payload < expected else 'trailing data'}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a native, writable copy


def read_idx(path: str | os.PathLike, expected_shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a NumPy array.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 6]))
        >>> read_idx(p).tolist()
        [5, 6]
    """
    path = os.fspath(path)
    return parse_idx(read_bytes(path), path, expected_shape)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress``); the inverse of :func:`read_idx`."""
    array = np.asarray(array)
    code = {v.newbyteorder("="): k for k, v in _TYPES.items()}.get(array.dtype)
    if code is None:
        raise TypeError(f"write_idx: IDX has no type code for dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + array.astype(_TYPES[code]).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)
