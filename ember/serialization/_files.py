"""The safetensors container: writing it (atomically, for paths) and reading it with limits.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each array's
dtype, shape and byte range, and the raw little-endian array bytes. Ember writes it itself rather
than through the ``safetensors`` package so that a full disk is an ordinary ``OSError`` (the
package raises its own ``SafetensorError``), arrays are streamed to the file without building the
whole file in memory first, and dtypes the package's NumPy layer lacks (bfloat16) can be written.

Reading validates the header before touching any payload and enforces :data:`limits`, so that a
hostile header (millions of entries, absurd shapes) is refused quickly, and reads only the bytes
the header declares (``ember.load('/dev/zero')`` cannot read without end).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ember import _dtype

__all__ = ["CheckpointError", "limits"]


class CheckpointError(RuntimeError):
    """A checkpoint file that is truncated, corrupt, or not an Ember/safetensors checkpoint."""


@dataclass
class _Limits:
    """Bounds on what ``ember.load`` accepts from a file (raise them only for files you trust)."""

    max_header_bytes: int = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
    max_tensors: int = 200_000  # entries in one file; real checkpoints hold thousands at most
    max_json_items: int = 4_000_000  # values in the header's JSON (about 100 bytes of memory each once parsed)
    max_depth: int = 200  # nesting of dicts/lists in the saved structure
    max_dims: int = 64  # NumPy's own limit on dimensions


limits = _Limits()

# safetensors dtype names <-> NumPy dtypes. BF16 is added when Ember has a bfloat16 dtype.
_BASE_ST_TO_NP = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "I32": np.dtype(np.int32),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
}


def _st_to_np() -> dict[str, np.dtype]:
    """The table, looked up when used: a bfloat16 dtype registered after import counts too."""
    table = dict(_BASE_ST_TO_NP)
    if "bfloat16" in _dtype._BY_NAME:
        table["BF16"] = _dtype._BY_NAME["bfloat16"].np
    return table


_CHUNK = 64 * 1024 * 1024  # reads of declared sizes go in chunks, so a lying size cannot allocate it all


# ----------------------------------------------------------------------------------------- write
def write(arrays: dict[str, np.ndarray], metadata: dict[str, str], fh: BinaryIO) -> None:
    """Write ``arrays`` (C-contiguous, native byte order) and ``metadata`` as one safetensors file."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    np_to_st = {v: k for k, v in _st_to_np().items()}
    for name, arr in arrays.items():
        code = np_to_st.get(arr.dtype)
        if code is None:
            raise TypeError(f"ember.save: cannot store arrays of dtype {arr.dtype}")
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the payload starts 8-byte aligned, as the safetensors writer does
    fh.write(len(raw).to_bytes(8, "little"))
    fh.write(raw)
    for arr in arrays.values():
        if arr.size:
            if sys.byteorder == "big" and arr.dtype.itemsize > 1:
                arr = arr.byteswap()  # safetensors is little-endian
            flat = arr.reshape(-1).view(np.uint8)  # a byte view works for every dtype, bfloat16 included
            fh.write(memoryview(flat))


_TMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
_STALE_AFTER_S = 30.0  # a temp file untouched this long whose writer is dead is removed


def write_path(path: str, write_fn) -> None:
    """Write a file at ``path`` atomically: ``write_fn(fh)`` fills a temporary file, then it is renamed.

    Temporary files are named ``.<name>.<pid>.<8 hex>.tmp``. A process killed mid-save leaves one
    behind; the next save to the same folder removes those whose process is gone.
    """
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temp_files(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through someone else's file; mode 0o666 lets the umask decide, as open() does.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True  # exists but belongs to someone else, or not a pid at all: keep its file
    return True


def _remove_stale_temp_files(directory: str) -> None:
    """Remove temporary files of saves whose process is dead (best effort, never a live one's)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        m = _TMP_RE.match(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
            # The age check protects a writer on another machine sharing this folder (NFS), whose
            # pid means nothing here: it is still writing, so its file's mtime is recent.
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > _STALE_AFTER_S:
                os.unlink(full)
        except OSError:
            pass


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (best effort: not every filesystem lets a directory be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- read
def open_source(f) -> tuple[BinaryIO, str, int | None, bool]:
    """(binary file object, name for messages, bytes available or None, whether we opened it)."""
    if hasattr(f, "read"):
        name = str(getattr(f, "name", None) or f"<{type(f).__name__}>")
        size = None
        try:
            if f.seekable():  # the bytes left, so that sizes declared in the file can be checked first
                here = f.tell()
                size = f.seek(0, os.SEEK_END) - here
                f.seek(here)
        except (OSError, ValueError, AttributeError):
            size = None
        return f, name, size, False
    path = os.fspath(f)
    # Check before opening: opening a FIFO for reading would block until someone writes to it.
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
        raise CheckpointError(f"ember.load: {path} is not a regular file (a device, pipe or socket); refusing it")
    fh = open(path, "rb")  # FileNotFoundError / IsADirectoryError / PermissionError name the path
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"ember.load: {path} is not a regular file (a device, pipe or socket); refusing it")
    except BaseException:
        fh.close()
        raise
    return fh, str(path), st.st_size, True


def read_exact(fh: BinaryIO, n: int, name: str, what: str) -> bytes:
    """Read exactly ``n`` bytes, in chunks, or raise CheckpointError (the file is truncated)."""
    parts = []
    left = n
    while left > 0:
        chunk = fh.read(min(left, _CHUNK))
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"ember.load: {name} must be opened in binary mode")
        if not chunk:
            raise CheckpointError(f"ember.load: {name} is truncated: {what} needs {n} bytes, the file has {n - left}")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


@dataclass
class Contents:
    """A parsed safetensors file: its metadata, entries by name and their arrays."""

    metadata: dict
    entries: dict[str, dict]
    arrays: dict[str, np.ndarray]
    name: str

    def array(self, key: str) -> np.ndarray:
        return self.arrays[key]


def _read_arrays(fh: BinaryIO, name: str, entries: dict[str, dict], spans: list) -> dict[str, np.ndarray]:
    """Read each entry straight into its own array, in file order (no second copy of the payload)."""
    table = _st_to_np()
    arrays = {}
    pos = 0
    for begin, end, key in spans:
        if begin > pos:
            read_exact(fh, begin - pos, name, "the tensor data")  # a gap another writer left: skip it
        entry = entries[key]
        arr = np.empty(entry["shape"], table[entry["dtype"]])
        view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        done = 0
        while done < end - begin:
            got = fh.readinto(view[done:]) if hasattr(fh, "readinto") else None
            if got is None:  # a stream without readinto
                chunk = read_exact(fh, min(end - begin - done, _CHUNK), name, f"tensor {key!r}")
                view[done : done + len(chunk)] = chunk
                got = len(chunk)
            if not got:
                raise CheckpointError(f"ember.load: {name} is truncated: tensor {key!r} needs {end - begin} bytes")
            done += got
        if sys.byteorder == "big" and arr.dtype.itemsize > 1:
            arr.byteswap(inplace=True)  # the file is little-endian
        arrays[key] = arr
        pos = end
    return arrays


def read_safetensors(fh: BinaryIO, name: str, size: int | None, prefix: bytes) -> Contents:
    """Parse a safetensors file whose first bytes (``prefix``, up to 8) were already read."""
    if len(prefix) < 8:
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: {len(prefix)} bytes, too short for a header")
    n = int.from_bytes(prefix[:8], "little")
    available = None if size is None else size - 8
    if n > limits.max_header_bytes or (available is not None and n > available):
        have = "" if available is None else f" but the file has {available} after the length field"
        raise CheckpointError(
            f"ember.load: {name} is truncated or corrupt: the header declares {n} bytes{have} "
            f"(the limit is {limits.max_header_bytes}, ember.serialization.limits.max_header_bytes)"
        )
    raw = read_exact(fh, n, name, "the header")
    # Count entries before parsing: a hostile header of a million tiny entries is refused in
    # milliseconds, without building a million Python dicts first.
    count = raw.count(b'"data_offsets"')
    if count > limits.max_tensors:
        raise CheckpointError(
            f"ember.load: {name} declares {count} tensors, more than the limit of {limits.max_tensors} "
            "(ember.serialization.limits.max_tensors; raise it only for a file you trust)"
        )
    items = raw.count(b",") + 1  # a bound on the values a JSON parse would build
    if items > limits.max_json_items:
        raise CheckpointError(
            f"ember.load: {name}: its header holds about {items} JSON values, more than the limit of "
            f"{limits.max_json_items} (ember.serialization.limits.max_json_items; raise it only for a file you trust)"
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"ember.load: {name}: header metadata is not a JSON object")
    if len(header) > limits.max_tensors:
        raise CheckpointError(f"ember.load: {name} declares {len(header)} tensors, more than {limits.max_tensors}")
    table = _st_to_np()
    spans = [_check_entry(name, key, entry, table) for key, entry in header.items()]
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"ember.load: {name}: tensors {a!r} and {b!r} overlap in the file")
    end = max((s[1] for s in spans), default=0)
    if available is not None and end > available - n:
        raise CheckpointError(
            f"ember.load: {name} is truncated or corrupt: its tensors need {end} bytes of data, "
            f"but the file holds {available - n}"
        )
    return Contents(metadata, header, _read_arrays(fh, name, header, spans), name)


def _check_entry(name: str, key: str, entry, table: dict[str, np.dtype]) -> tuple[int, int, str]:
    what = f"ember.load: {name}: tensor {key!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{what} has no description")
    dt, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dt not in table:
        raise CheckpointError(f"{what} has dtype {dt!r}; Ember reads {sorted(table)}")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise CheckpointError(f"{what} has an invalid shape {str(shape)[:100]}")
    if len(shape) > limits.max_dims:
        raise CheckpointError(f"{what} has {len(shape)} dimensions; at most {limits.max_dims} are supported")
    # Even an empty array must have a representable shape: NumPy refuses [2**62, 2**62, 0].
    if math.prod(max(s, 1) for s in shape) * table[dt].itemsize >= 2**62:
        raise CheckpointError(f"{what} has an impossibly large shape {shape}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{what} has invalid data_offsets {str(offsets)[:100]}")
    begin, end = offsets
    nbytes = math.prod(shape) * table[dt].itemsize
    if not 0 <= begin <= end or end - begin != nbytes:
        raise CheckpointError(
            f"{what} (dtype {dt}, shape {shape}) needs {nbytes} bytes but its data_offsets {offsets} "
            "span a different range: corrupt"
        )
    return begin, end, key
