"""Checkpoints: ``ember.save`` and ``ember.load``, in a format that never runs code on load.

File format: one ordinary `safetensors <https://github.com/huggingface/safetensors>`_ file. Its
tensors hold the array data (one entry per distinct memory region); the structure of the saved
object (nested dicts, lists, tuples, numbers, strings, None, and references to those tensors) is
JSON in the safetensors header metadata under ``"ember.structure"``. Keeping both in one file makes
a checkpoint one atomic rename, and any safetensors reader can still open the arrays.

In the structure, JSON null/true/false/numbers/strings stand for themselves, and every JSON object
is a tagged node with one key: ``{"tensor": i}`` (entry ``i`` of the tensor table), ``{"list": [...]}``,
``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}`` (keys need not be strings: optimizer state
uses ints), ``{"odict": ...}`` (OrderedDict), ``{"float": "nan" | "inf" | "-inf"}``,
``{"dtype": name}``, ``{"device": name}``, ``{"size": [...]}`` (``ember.Size``), ``{"bytes": base64}``.
Each tensor-table entry names its safetensors array and keeps ``requires_grad``, whether it was an
``nn.Parameter``, its device, and whether it was a NumPy array.

Behaviour, compared with ``torch.save``/``torch.load``:

- Tensors saved in two places (tied weights) are stored once. The same Tensor object comes back as
  one object; distinct tensors over the same memory (``state_dict()`` entries of a tied weight)
  come back as distinct tensors sharing one array. Partly overlapping views are stored as copies.
- ``requires_grad`` and the ``Parameter`` type are kept, as PyTorch keeps them (a ``state_dict()``
  holds detached tensors, so it has neither). Gradients and autograd history are not saved.
- ``weights_only`` is accepted for compatibility: both values load the same, since the format cannot
  hold code. Objects other than the ones listed above (modules, optimizers, arbitrary classes) are
  refused at save time with a TypeError: save their ``state_dict()``.
- ``map_location``: None (each tensor on its saved device), a device or string, a dict
  ``{saved: target}``, or a callable ``f(tensor_on_cpu, saved_location) -> tensor``.

Writes are atomic: a temporary file in the target directory is written, fsynced and renamed over
the target, so a crash leaves the old checkpoint or the new one, never half of one.

Example:
    >>> import io, ember
    >>> buf = io.BytesIO()
    >>> ember.save({"w": ember.ones(2), "epoch": 3}, buf)
    >>> _ = buf.seek(0)
    >>> ember.load(buf)
    {'w': tensor([1., 1.]), 'epoch': 3}
"""

from __future__ import annotations

import base64
import collections
import json
import math
import os
import secrets
from typing import Any, BinaryIO

import numpy as np

from ember import _dtype
from ember._device import device as _device_cls
from ember.tensor import Size, Tensor, _wrap

_STRUCTURE_KEY = "ember.structure"
_FORMAT = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_MAX_DEPTH = 200  # nesting deeper than this is refused (a hostile file could nest without end)

# safetensors dtype names <-> NumPy dtypes Ember has.
_ST_TO_NP = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "I32": np.dtype(np.int32),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": _dtype.bfloat16.np,
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
}

PathOrFile = str | os.PathLike | BinaryIO


class CheckpointError(RuntimeError):
    """A checkpoint file that is truncated, corrupt, or not an Ember/safetensors checkpoint."""


# ----------------------------------------------------------------------------------------- save
class _Encoder:
    """Turns a saved object into (structure JSON, arrays by name), deduplicating shared memory."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.table: list[dict] = []
        self._tensor_ids: dict[int, int] = {}  # id(tensor or ndarray) -> table index
        self._regions: dict[tuple, str] = {}  # memory region -> array name
        self._keep: list = []  # keeps encoded objects alive so their ids stay unique
        self._on_path: set[int] = set()

    def _storage(self, host: np.ndarray, region: tuple) -> str:
        name = self._regions.get(region)
        if name is None:
            name = str(len(self.arrays))
            # safetensors writes raw memory; np.ascontiguousarray would turn 0-d into 1-d.
            self.arrays[name] = host if host.flags.c_contiguous else host.copy(order="C")
            self._regions[region] = name
        return name

    def _tensor(self, t: Tensor, where: str) -> dict:
        idx = self._tensor_ids.get(id(t))
        if idx is None:
            if t._data.dtype not in _dtype._BY_NP:
                raise TypeError(f"ember.save: tensor at {where} has unsupported dtype {t._data.dtype}")
            region = (str(t.device), t.data_ptr(), t._data.shape, t._data.strides, t._data.dtype.str)
            host = t._device.backend.to_host(t._data)
            entry = {"storage": self._storage(host, region), "device": str(t.device)}
            if t._requires_grad:
                entry["requires_grad"] = True
            if type(t).__name__ == "Parameter":
                entry["parameter"] = True
            idx = self._add(t, entry)
        return {"tensor": idx}

    def _ndarray(self, a: np.ndarray, where: str) -> dict:
        idx = self._tensor_ids.get(id(a))
        if idx is None:
            if a.dtype not in _dtype._BY_NP:
                raise TypeError(f"ember.save: NumPy array at {where} has unsupported dtype {a.dtype}")
            region = ("numpy", a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
            idx = self._add(a, {"storage": self._storage(a, region), "ndarray": True})
        return {"tensor": idx}

    def _add(self, obj, entry: dict) -> int:
        self.table.append(entry)
        self._keep.append(obj)
        self._tensor_ids[id(obj)] = len(self.table) - 1
        return len(self.table) - 1

    def encode(self, obj: Any, where: str = "obj") -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)  # IntEnum and friends become plain ints
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else {"float": repr(float(obj))}
        if isinstance(obj, Tensor):
            return self._tensor(obj, where)
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj, where)
        if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
            return self.encode(obj.item(), where)
        if isinstance(obj, _dtype.dtype):
            return {"dtype": obj.name}
        if isinstance(obj, _device_cls):
            return {"device": str(obj)}
        if isinstance(obj, bytes):
            return {"bytes": base64.b64encode(obj).decode("ascii")}
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self._on_path:
                raise ValueError(f"ember.save: {where} contains itself (a circular reference)")
            self._on_path.add(id(obj))
            try:
                return self._container(obj, where)
            finally:
                self._on_path.discard(id(obj))
        raise TypeError(
            f"ember.save: cannot save an object of type {type(obj).__module__}.{type(obj).__qualname__} at {where}; "
            "checkpoints hold tensors, NumPy arrays, numbers, strings, None, and dicts/lists/tuples of them "
            "(save a module's or optimizer's state_dict())"
        )

    def _container(self, obj, where: str) -> dict:
        if isinstance(obj, Size):
            return {"size": [int(s) for s in obj]}
        if isinstance(obj, dict):
            items = [[self.encode(k, f"{where} key {k!r}"), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]
            return {"odict" if isinstance(obj, collections.OrderedDict) else "dict": items}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            raise TypeError(f"ember.save: cannot save namedtuple {type(obj).__qualname__} at {where}; use a dict")
        tag = "tuple" if isinstance(obj, tuple) else "list"
        return {tag: [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}


def save(
    obj: Any, f: PathOrFile, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True
) -> None:
    """Save ``obj`` (tensors, numbers, strings, None and dicts/lists/tuples of them) to ``f``.

    ``f`` is a path (written atomically) or a writable binary file object. The extra arguments
    exist for ``torch.save`` compatibility and are ignored.

    Example:
        >>> import ember, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
        >>> ember.save({"model": {"w": ember.zeros(2)}, "epoch": 1}, path)
        >>> ember.load(path)["epoch"]
        1
    """
    import safetensors.numpy

    enc = _Encoder()
    root = enc.encode(obj)
    structure = json.dumps({"format": _FORMAT, "tensors": enc.table, "root": root}, allow_nan=False)
    metadata = {"format": "ember", _STRUCTURE_KEY: structure}
    if hasattr(f, "write"):
        f.write(safetensors.numpy.save(enc.arrays, metadata=metadata))
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through someone else's file; mode 0o666 lets the umask decide, as open() does.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = os.stat(tmp).st_mode & 0o777
        safetensors.numpy.save_file(enc.arrays, tmp, metadata=metadata)
        os.chmod(tmp, mode)  # safetensors replaces the file with a private (0600) one
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


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


# ----------------------------------------------------------------------------------------- load
def _read_all(f: PathOrFile) -> tuple[bytes, str]:
    if hasattr(f, "read"):
        name = getattr(f, "name", None) or f"<{type(f).__name__}>"
        data = f.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"ember.load: {name} must be opened in binary mode")
        return bytes(data), str(name)
    path = os.fspath(f)
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError name the path
        return fh.read(), path


def _parse_header(data: bytes, name: str) -> tuple[dict, dict[str, dict], int]:
    """Validate the safetensors header before touching any payload: (metadata, entries, payload start)."""
    if len(data) < 8:
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: {len(data)} bytes, too short for a header")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > _MAX_HEADER:
        raise CheckpointError(
            f"ember.load: {name} is truncated or corrupt: the header declares {n} bytes but the file has "
            f"{len(data) - 8} after the length field"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"ember.load: {name} is not a checkpoint: its header is not a JSON object")
    payload = len(data) - 8 - n
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"ember.load: {name}: header metadata is not a JSON object")
    spans = []
    for key, entry in header.items():
        what = f"ember.load: {name}: tensor {key!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{what} has no description")
        dt, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dt not in _ST_TO_NP:
            raise CheckpointError(f"{what} has dtype {dt!r}; Ember reads {sorted(_ST_TO_NP)}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise CheckpointError(f"{what} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise CheckpointError(f"{what} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        nbytes = math.prod(shape) * _ST_TO_NP[dt].itemsize
        if not 0 <= begin <= end <= payload or end - begin != nbytes:
            raise CheckpointError(
                f"{what} (dtype {dt}, shape {shape}) needs {nbytes} bytes at offsets {offsets}, "
                f"but the file holds {payload} bytes of tensor data: truncated or corrupt"
            )
        spans.append((begin, end, key))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"ember.load: {name}: tensors {a!r} and {b!r} overlap in the file")
    return metadata, header, 8 + n


class _Decoder:
    def __init__(self, name: str, data: bytes, entries: dict, start: int, map_location) -> None:
        self.name = name
        self.data = data
        self.entries = entries
        self.start = start
        self.map_location = map_location
        self.arrays: dict[str, np.ndarray] = {}
        self.moved: dict[tuple, Tensor] = {}
        self.objects: dict[int, Any] = {}
        self.table: list = []

    def fail(self, msg: str):
        raise CheckpointError(f"ember.load: {self.name}: {msg}")

    def array(self, key: str) -> np.ndarray:
        arr = self.arrays.get(key) if isinstance(key, str) else None
        if arr is None:
            entry = self.entries.get(key) if isinstance(key, str) else None
            if entry is None:
                self.fail(f"the structure refers to tensor data {key!r}, which the file does not contain")
            dt = _ST_TO_NP[entry["dtype"]].newbyteorder("<")
            begin = self.start + entry["data_offsets"][0]
            count = math.prod(entry["shape"])
            flat = np.frombuffer(self.data, dtype=dt, count=count, offset=begin)
            # A copy: writable, aligned, native byte order, and not pinning the whole file in memory.
            arr = flat.astype(dt.newbyteorder("="), copy=True).reshape(entry["shape"])
            self.arrays[key] = arr
        return arr

    def tensor(self, idx) -> Any:
        if type(idx) is not int or not 0 <= idx < len(self.table):
            self.fail(f"the structure refers to tensor #{idx!r}, but the table has {len(self.table)} entries")
        if idx in self.objects:
            return self.objects[idx]
        entry = self.table[idx]
        if not isinstance(entry, dict) or "storage" not in entry:
            self.fail(f"tensor table entry #{idx} is malformed: {entry!r}")
        arr = self.array(entry["storage"])
        if entry.get("ndarray"):
            out = arr
        else:
            out = self._place(_wrap(arr), entry)
            if entry.get("requires_grad") and out.is_floating_point():
                out._requires_grad = True
            if entry.get("parameter"):
                from ember.nn.parameter import Parameter

                out = Parameter(out, requires_grad=out._requires_grad)
        self.objects[idx] = out
        return out

    def _place(self, t: Tensor, entry: dict) -> Tensor:
        saved = entry.get("device", "cpu")
        loc = self.map_location
        if callable(loc) and not isinstance(loc, (str, _device_cls)):
            result = loc(t, saved)
            return t if result is None else result
        if isinstance(loc, dict):
            target = loc.get(saved, saved)
        else:
            target = saved if loc is None else loc
        try:
            target = str(_device_cls(target))
        except Exception as exc:
            self.fail(f"cannot place a tensor on device {target!r} ({exc})")
        if target == "cpu":
            return t
        key = (entry["storage"], target)  # keep shared memory shared on the new device too
        if key not in self.moved:
            try:
                self.moved[key] = t.to(target)
            except Exception as exc:
                raise RuntimeError(
                    f"ember.load: {self.name}: cannot place a tensor saved on {saved!r} on {target!r} ({exc}); "
                    "pass map_location='cpu' to load it on the CPU"
                ) from exc
        return _wrap(self.moved[key]._data, self.moved[key].device)

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            self.fail(f"the structure nests deeper than {_MAX_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            self.fail(f"malformed structure node {str(node)[:80]!r}")
        ((tag, value),) = node.items()
        if tag == "tensor":
            return self.tensor(value)
        if tag in ("list", "tuple", "size"):
            if not isinstance(value, list):
                self.fail(f"malformed {tag} node")
            items = [self.decode(v, depth + 1) for v in value]
            if tag == "size":
                if not all(type(s) is int for s in items):
                    self.fail("malformed size node")
                return Size(items)
            return items if tag == "list" else tuple(items)
        if tag in ("dict", "odict"):
            if not isinstance(value, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in value):
                self.fail(f"malformed {tag} node")
            out = collections.OrderedDict() if tag == "odict" else {}
            for k, v in value:
                key = self.decode(k, depth + 1)
                try:
                    out[key] = self.decode(v, depth + 1)
                except TypeError:  # an unhashable key such as a list
                    self.fail(f"dictionary key {key!r} is not hashable")
            return out
        if tag == "float" and value in ("nan", "inf", "-inf"):
            return float(value)
        if tag == "dtype" and value in _dtype._BY_NAME:
            return _dtype._BY_NAME[value]
        if tag == "device" and isinstance(value, str):
            try:
                return _device_cls(value)
            except Exception:
                self.fail(f"unknown device {value!r}")
        if tag == "bytes" and isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                self.fail("malformed bytes node")
        self.fail(f"unknown structure node {tag!r}: {str(value)[:80]!r}")


def load(
    f: PathOrFile, map_location=None, pickle_module=None, *, weights_only: bool = True, mmap=None, **kwargs
) -> Any:
    """Load an object saved by :func:`save` (a path or a readable binary file object).

    A plain safetensors file without Ember's structure loads as a dict of tensors. A truncated,
    corrupt or hostile file raises :class:`CheckpointError` (a RuntimeError) naming the file; a
    missing one raises FileNotFoundError. See the module docstring for ``map_location``.

    Example:
        >>> import io, ember
        >>> buf = io.BytesIO(); w = ember.ones(2)
        >>> ember.save({"a": w, "b": w}, buf); _ = buf.seek(0)
        >>> d = ember.load(buf)
        >>> d["a"] is d["b"]
        True
    """
    data, name = _read_all(f)
    metadata, entries, start = _parse_header(data, name)
    dec = _Decoder(name, data, entries, start, map_location)
    structure = metadata.get(_STRUCTURE_KEY)
    if structure is None:
        return {key: dec._place(_wrap(dec.array(key)), {"storage": key}) for key in sorted(entries)}
    if not isinstance(structure, str):
        dec.fail("the structure metadata is not a string")
    try:
        doc = json.loads(structure)
    except (ValueError, RecursionError) as exc:
        dec.fail(f"the structure metadata is not valid JSON ({exc})")
    if not isinstance(doc, dict) or "root" not in doc or not isinstance(doc.get("tensors"), list):
        dec.fail("the structure metadata lacks its 'root' or 'tensors' fields")
    if doc.get("format") != _FORMAT:
        dec.fail(f"checkpoint format {doc.get('format')!r} is not supported (this Ember reads format {_FORMAT})")
    dec.table = doc["tensors"]
    return dec.decode(doc["root"])
