"""Ember's checkpoint structure: the saved object as JSON beside its arrays, in one safetensors file.

The tensors hold the array data (one entry per distinct memory region); the structure of the saved
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

Anything else (a whole Module, a user class, a namedtuple) is ``{"object": base64 pickle}``: a
pickle whose tensors and arrays are not inside it but persistent references to the same tensor
table (so sharing with the rest of the checkpoint is kept). Loading one with ``weights_only=True``
goes through :class:`~ember.serialization._globals.RestrictedUnpickler`, which refuses every class
or function not allowlisted, before calling or importing anything.
"""

from __future__ import annotations

import base64
import binascii
import collections
import io
import math
import pickle
from typing import Any

import numpy as np

from ember import _dtype
from ember._device import device as _device_cls
from ember.serialization._files import CheckpointError, Contents, limits
from ember.serialization._globals import RestrictedUnpickler
from ember.tensor import Size, Tensor, _wrap

__all__ = ["Decoder", "Encoder", "FORMAT", "STRUCTURE_KEY", "place"]

STRUCTURE_KEY = "ember.structure"
FORMAT = 1
_PERSISTENT_TAGS = ("tensor", "dtype", "device", "size")  # what a pickled object may refer to outside itself


# ----------------------------------------------------------------------------------------- save
class Encoder:
    """Turns a saved object into (structure JSON, arrays by name), deduplicating shared memory."""

    def __init__(self, pickle_protocol: int | None = None) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.table: list[dict] = []
        self._tensor_ids: dict[int, int] = {}  # id(tensor or ndarray) -> table index
        self._regions: dict[tuple, str] = {}  # memory region -> array name
        self._keep: list = []  # keeps encoded objects alive so their ids stay unique
        self._on_path: set[int] = set()
        self._protocol = pickle_protocol if pickle_protocol is not None else pickle.DEFAULT_PROTOCOL

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
        # dict/list/tuple subclasses are stored as their base type (as before); a namedtuple is pickled.
        if isinstance(obj, (dict, list, tuple)) and not hasattr(obj, "_fields"):
            if id(obj) in self._on_path:
                raise ValueError(f"ember.save: {where} contains itself (a circular reference)")
            self._on_path.add(id(obj))
            try:
                return self._container(obj, where)
            finally:
                self._on_path.discard(id(obj))
        return self._object(obj, where)

    def _object(self, obj: Any, where: str) -> dict:
        """Pickle an object outside the JSON subset; its tensors go to the shared table."""
        encoder = self

        class _Pickler(pickle.Pickler):
            def persistent_id(self, x):
                if isinstance(x, np.ndarray) and x.dtype not in _dtype._BY_NP:
                    return None  # e.g. an object array: pickled as NumPy pickles it
                if isinstance(x, (Tensor, np.ndarray, _dtype.dtype, _device_cls, Size)):
                    return encoder.encode(x, f"{where} (inside {type(obj).__qualname__})")
                return None

        buf = io.BytesIO()
        _Pickler(buf, protocol=self._protocol).dump(obj)
        return {"object": base64.b64encode(buf.getvalue()).decode("ascii")}

    def _container(self, obj, where: str) -> dict:
        if isinstance(obj, Size):
            return {"size": [int(s) for s in obj]}
        if isinstance(obj, dict):
            items = [[self.encode(k, f"{where} key {k!r}"), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]
            return {"odict" if isinstance(obj, collections.OrderedDict) else "dict": items}
        tag = "tuple" if isinstance(obj, tuple) else "list"
        return {tag: [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}


# ----------------------------------------------------------------------------------------- load
def place(t: Tensor, saved: str, map_location, name: str, moved: dict | None = None, key=None) -> Tensor:
    """Put a CPU tensor loaded from ``name`` where ``map_location`` says (torch.load's rules).

    ``map_location``: None (the saved device), a device or string, a dict ``{saved: target}``, or a
    callable ``f(tensor_on_cpu, saved_location) -> tensor or None``. ``moved`` caches one copy per
    ``key`` (a storage) so that memory shared in the file stays shared on the target device.
    """
    loc = map_location
    if callable(loc) and not isinstance(loc, (str, _device_cls)):
        result = loc(t, saved)
        return t if result is None else result
    target = loc.get(saved, saved) if isinstance(loc, dict) else (saved if loc is None else loc)
    try:
        target = str(_device_cls(target))
    except Exception as exc:
        raise CheckpointError(f"ember.load: {name}: cannot place a tensor on device {target!r} ({exc})") from None
    if target == "cpu":
        return t
    cache = {} if moved is None else moved
    ck = (key, target)
    if ck not in cache:
        try:
            cache[ck] = t.to(target)
        except Exception as exc:
            raise RuntimeError(
                f"ember.load: {name}: cannot place a tensor saved on {saved!r} on {target!r} ({exc}); "
                "pass map_location='cpu' (or map_location=ember.device('cpu')) to load it on the CPU"
            ) from exc
    out = cache[ck]
    return _wrap(out._data, out.device) if key is not None else out


class Decoder:
    """Rebuilds the saved object from the structure JSON and the file's arrays."""

    def __init__(self, contents: Contents, map_location, weights_only: bool) -> None:
        self.name = contents.name
        self.contents = contents
        self.map_location = map_location
        self.weights_only = weights_only
        self.arrays: dict[str, np.ndarray] = {}
        self.moved: dict[tuple, Tensor] = {}
        self.objects: dict[int, Any] = {}
        self.table: list = []

    def fail(self, msg: str):
        raise CheckpointError(f"ember.load: {self.name}: {msg}")

    def array(self, key: str) -> np.ndarray:
        arr = self.arrays.get(key) if isinstance(key, str) else None
        if arr is None:
            if not isinstance(key, str) or key not in self.contents.entries:
                self.fail(f"the structure refers to tensor data {key!r}, which the file does not contain")
            arr = self.arrays[key] = self.contents.array(key)  # each key is read once, fresh and writable
        return arr

    def plain(self) -> dict[str, Tensor]:
        """A safetensors file without Ember's structure: a dict of tensors by name."""
        return {key: self.place(_wrap(self.array(key)), {"storage": key}) for key in sorted(self.contents.entries)}

    def place(self, t: Tensor, entry: dict) -> Tensor:
        return place(t, entry.get("device", "cpu"), self.map_location, self.name, self.moved, entry["storage"])

    def tensor(self, idx) -> Any:
        if type(idx) is not int or not 0 <= idx < len(self.table):
            self.fail(f"the structure refers to tensor #{idx!r}, but the table has {len(self.table)} entries")
        if idx in self.objects:
            return self.objects[idx]
        entry = self.table[idx]
        if not isinstance(entry, dict) or "storage" not in entry:
            self.fail(f"tensor table entry #{idx} is malformed: {str(entry)[:80]}")
        arr = self.array(entry["storage"])
        if entry.get("ndarray"):
            out = arr
        else:
            out = self.place(_wrap(arr), entry)
            if entry.get("requires_grad") and out.is_floating_point():
                out._requires_grad = True
            if entry.get("parameter"):
                from ember.nn.parameter import Parameter

                out = Parameter(out, requires_grad=out._requires_grad)
        self.objects[idx] = out
        return out

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > limits.max_depth:
            self.fail(
                f"the structure nests deeper than {limits.max_depth} levels (ember.serialization.limits.max_depth)"
            )
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
        if tag == "object" and isinstance(value, str):
            return self._object(value, depth)
        self.fail(f"unknown structure node {tag!r}: {str(value)[:80]!r}")

    def _object(self, text: str, depth: int) -> Any:
        try:
            blob = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            self.fail("malformed object node")

        def persistent_load(pid):
            if not (isinstance(pid, dict) and len(pid) == 1 and next(iter(pid)) in _PERSISTENT_TAGS):
                self.fail(f"a pickled object refers to {str(pid)[:80]!r}, which is not a tensor, dtype, device or size")
            return self.decode(pid, depth + 1)

        unpickler = RestrictedUnpickler(io.BytesIO(blob), {}, self.weights_only)
        unpickler.persistent_load = persistent_load
        if not self.weights_only:
            return unpickler.load()  # the caller trusts the file: its own errors are the object's
        try:
            return unpickler.load()
        except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError) as exc:
            self.fail(f"a pickled object is corrupt ({type(exc).__name__}: {exc})")
