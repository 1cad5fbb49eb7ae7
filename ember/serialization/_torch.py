"""Reading PyTorch's own checkpoint files without PyTorch and without running their code.

Two layouts exist. ``torch.save`` (since 1.6) writes a zip archive: ``<dir>/data.pkl`` is a pickle
of the saved object whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` calls, each storage a persistent id ``('storage', StorageType, key, location,
numel)`` whose bytes are the entry ``<dir>/data/<key>``; ``<dir>/byteorder`` says the byte order.
The legacy layout (``_use_new_zipfile_serialization=False``) is a stream of pickles: a magic
number, a protocol version, system info, the object (storages as persistent ids), the list of
storage keys, then each storage's element count (8 bytes) and raw bytes in that order.

The pickles are read with :class:`~ember.serialization._globals.RestrictedUnpickler`: the only
``torch.*`` names it resolves are the tensor and parameter rebuild functions, storage types,
dtypes, ``torch.Size`` and ``torch.device``, each mapped to Ember's own code below. Any other
global is refused with ``pickle.UnpicklingError`` naming it, before anything is called.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from ember import _dtype
from ember._device import device as _device_cls
from ember.serialization._files import CheckpointError, limits, read_exact
from ember.serialization._globals import RestrictedUnpickler
from ember.serialization._structure import place
from ember.tensor import Size, Tensor, _wrap

__all__ = ["load", "sniff"]

_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_PROTOCOL_VERSION = 1001
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _MAGIC.to_bytes(10, "little")

# torch dtype names (and aliases) -> Ember dtype names.
_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
}  # fmt: skip
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}  # fmt: skip
# Rebuild functions for tensors Ember has no counterpart for: named in a clear refusal.
_UNSUPPORTED = {
    "_rebuild_qtensor": "quantized",
    "_rebuild_sparse_tensor": "sparse",
    "_rebuild_nested_tensor": "nested",
    "_rebuild_meta_tensor_no_storage": "meta",
    "_rebuild_wrapper_subclass": "subclass",
    "_rebuild_device_tensor_from_numpy": "device",
    "_rebuild_device_tensor_from_cpu_tensor": "device",
    "_rebuild_xla_tensor": "XLA",
    "_rebuild_mtia_tensor": "MTIA",
}


def sniff(prefix: bytes) -> str | None:
    """'zip' or 'legacy' when the first bytes are those of a PyTorch file, else None (safetensors)."""
    if prefix[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(prefix) >= 8 and prefix == _LEGACY_PREFIX[: len(prefix)]:
        return "legacy"
    # A legacy file pickled with protocol 3-5 starts with PROTO n. Read as a safetensors header
    # length those bytes declare more than any header may hold, so the two cannot be confused.
    if len(prefix) >= 8 and prefix[0] == 0x80 and 3 <= prefix[1] <= 5:
        if int.from_bytes(prefix[:8], "little") > limits.max_header_bytes:
            return "legacy"
    return None


class _TypeName:
    """A storage type or dtype named by the file, resolved to an Ember dtype when used."""

    def __init__(self, torch_name: str, ember_name: str | None) -> None:
        self.torch_name = torch_name
        self.ember_name = ember_name

    def __repr__(self) -> str:
        return f"<{self.torch_name}, which Ember has no dtype for>"

    def dtype(self, file: str) -> _dtype.dtype:
        d = _dtype._BY_NAME.get(self.ember_name or "")
        if d is None:
            raise CheckpointError(
                f"ember.load: {file} holds a tensor of type {self.torch_name}, which Ember has no dtype for "
                f"(Ember's dtypes: {', '.join(sorted(_dtype._BY_NAME))})"
            )
        return d


_UNTYPED = _TypeName("torch.UntypedStorage", "uint8")
_TENSOR_CLASS = object()  # stands for torch.Tensor in _rebuild_from_type_v2
_PARAMETER_CLASS = object()  # stands for torch.nn.Parameter


class _Storage:
    """One storage of the file: its bytes (filled when read), element size and saved location."""

    def __init__(self, key: str, nbytes: int, itemsize: int, location: str) -> None:
        self.key = key
        self.bytes = np.empty(nbytes, np.uint8)
        self.itemsize = itemsize
        self.location = location
        self.swapped = False  # big-endian bytes already swapped to native order
        self.override: np.ndarray | None = None  # the array a map_location callable returned
        self.target: str | None = None

    def typed(self, dt: _dtype.dtype) -> np.ndarray:
        if self.override is not None:
            return self.override
        usable = self.bytes.size - self.bytes.size % dt.itemsize
        return self.bytes[:usable].view(dt.np)


class _Typed:
    """A storage reference as the pickle sees it: the storage and the dtype it was saved as."""

    def __init__(self, storage: _Storage, dtype: _dtype.dtype) -> None:
        self.storage = storage
        self.dtype = dtype


class _Loader:
    """The state of one ``ember.load`` of a PyTorch file."""

    def __init__(self, name: str, map_location, weights_only: bool, big_endian: bool = False) -> None:
        self.name = name
        self.map_location = map_location
        self.weights_only = weights_only
        self.big_endian = big_endian
        self.storages: dict[str, _Storage] = {}
        self.place_now = True  # False in the legacy layout's first pass: storages not read yet
        self.budget: int | None = None  # bytes in the file, when known: no storage can be larger

    def fail(self, msg: str):
        raise CheckpointError(f"ember.load: {self.name}: {msg}")

    # ------------------------------------------------------------------ the globals a file may name
    def table(self) -> dict[str, Any]:
        t: dict[str, Any] = {
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter,
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
            "torch.Tensor": _TENSOR_CLASS,
            "torch.nn.parameter.Parameter": _PARAMETER_CLASS,
            "torch.Size": lambda dims=(): Size([int(d) for d in dims]),
            "torch.device": self._device,
            "torch.UntypedStorage": _UNTYPED,
            "torch.storage.UntypedStorage": _UNTYPED,
        }
        for torch_name, ember_name in _DTYPES.items():
            # Ember's dtype where it has one (a dtype saved as a value comes back as Ember's).
            d = _dtype._BY_NAME.get(ember_name)
            t[f"torch.{torch_name}"] = d if d is not None else _TypeName(f"torch.{torch_name}", ember_name)
        for storage, ember_name in _STORAGES.items():
            t[f"torch.{storage}"] = _TypeName(f"torch.{storage}", ember_name)
            # Old files name CUDA storages by their own classes; the location string says the device.
            t[f"torch.cuda.{storage}"] = _TypeName(f"torch.cuda.{storage}", ember_name)
        return t

    def reject(self, full: str) -> None:
        """A torch name outside the table: Ember cannot rebuild it, allowlisted or not, trusted or not."""
        if not full.startswith("torch."):
            return  # a user's class: the weights_only rule and the allowlist decide
        short = full.rsplit(".", 1)[-1]
        if short in _UNSUPPORTED:
            what = f"{_UNSUPPORTED[short]} tensors ({full})"
        elif short.endswith("Storage"):
            what = f"storages of type {full}"
        else:
            what = full
        raise pickle.UnpicklingError(
            f"ember.load: {self.name} is a PyTorch file that needs {what}, which Ember cannot rebuild: it reads "
            "tensors, parameters, containers and plain values from PyTorch files. Save a state_dict() (dense "
            "tensors) in PyTorch and load that."
        )

    def unpickler(self, file: BinaryIO) -> RestrictedUnpickler:
        return RestrictedUnpickler(file, self.table(), self.weights_only, self.reject)

    # ------------------------------------------------------------------ storages and tensors
    def storage(self, pid, legacy: bool) -> _Typed:
        """``persistent_load``: a storage reference of the object pickle."""
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            self.fail(f"unknown persistent id {str(pid)[:80]}")
        if len(pid) != (6 if legacy else 5):
            self.fail(f"malformed storage reference {str(pid)[:120]}")
        stype, key, location, numel = pid[1:5]
        if isinstance(location, bytes):
            location = location.decode("ascii", "replace")
        ok = isinstance(stype, _TypeName) and isinstance(key, str) and isinstance(location, str)
        if not ok or type(numel) is not int or numel < 0:
            self.fail(f"malformed storage reference {str(pid)[:120]}")
        dt = stype.dtype(self.name)
        nbytes = numel * dt.itemsize
        st = self.storages.get(key)
        if st is None and self.budget is not None and nbytes > self.budget:
            # Checked before allocating: a lying size must not make us reserve terabytes.
            self.fail(f"storage {key!r} declares {nbytes} bytes, more than the whole file ({self.budget})")
        if st is None:
            st = self.storages[key] = self.new_storage(key, nbytes, dt.itemsize, location)
        elif st.bytes.size != nbytes and not (legacy and st.bytes.size >= nbytes):
            self.fail(f"storage {key!r} is referenced with two different sizes")
        if self.big_endian and not st.swapped and dt.itemsize > 1:
            st.bytes.view(dt.np).byteswap(inplace=True)  # once, as the type it was saved as
            st.swapped = True
        if legacy and pid[5] is not None:  # a view of part of another storage (old PyTorch)
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int for v in view[1:])):
                self.fail(f"malformed storage view {str(view)[:80]}")
            _, offset, size = view
            begin, end = offset * dt.itemsize, (offset + size) * dt.itemsize
            if not 0 <= begin <= end <= st.bytes.size:
                self.fail(f"storage view {view[0]!r} lies outside its storage")
            sub = _Storage(str(view[0]), 0, dt.itemsize, location)
            sub.bytes = st.bytes[begin:end]
            return _Typed(sub, dt)
        return _Typed(st, dt)

    def new_storage(self, key: str, nbytes: int, itemsize: int, location: str) -> _Storage:
        raise NotImplementedError  # each layout reads or allocates its own

    def _view(self, typed, offset, size, stride, dt: _dtype.dtype) -> Tensor:
        if not isinstance(typed, _Typed):
            self.fail(f"a tensor is rebuilt from {type(typed).__name__}, not a storage")
        storage = typed.storage
        ok = type(offset) is int and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
        ok = ok and all(type(v) is int for v in (*size, *stride)) and len(size) <= limits.max_dims
        if not ok or offset < 0 or min((*size, *stride), default=0) < 0:
            self.fail(f"malformed tensor geometry: offset {offset!r}, size {size!r}, stride {stride!r}")
        flat = storage.typed(dt)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size else offset - 1
        if offset > flat.size or last >= flat.size:
            self.fail(
                f"a tensor of size {list(size)} and stride {list(stride)} at offset {offset} reaches "
                f"element {last}, past the end of its storage ({flat.size} elements): corrupt"
            )
        # A view of the storage's memory, as PyTorch's tensors are: views saved together stay shared.
        arr = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * dt.itemsize for s in stride], writeable=True
        )
        if not self.place_now:
            return _wrap(arr)
        if storage.target is None:
            self._resolve_target(storage, dt)
            if storage.override is not None:
                return self._view(typed, offset, size, stride, dt)  # rebuilt from what the callable returned
        t = _wrap(arr)
        return t if storage.target == "cpu" else place(t, storage.location, storage.target, self.name)

    def _resolve_target(self, storage: _Storage, dt: _dtype.dtype) -> None:
        """Where ``map_location`` puts this storage (a callable is called once per storage, as in torch)."""
        loc = self.map_location
        if callable(loc) and not isinstance(loc, (str, _device_cls)):
            whole = _wrap(storage.typed(dt))
            result = loc(whole, storage.location)
            storage.target = "cpu"
            if isinstance(result, Tensor):
                storage.target = str(result.device)
                if result.device.type == "cpu" and result is not whole:
                    storage.override = np.asarray(result._data).reshape(-1)
        else:
            storage.target = str(place(_wrap(np.empty(0, np.uint8)), storage.location, loc, self.name).device)

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _Typed):
            self.fail("a tensor is rebuilt from something that is not a storage")
        t = self._view(storage, storage_offset, size, stride, storage.dtype)
        if requires_grad is True and t.is_floating_point():
            t._requires_grad = True
        return t

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if isinstance(dtype, _TypeName):
            dtype = dtype.dtype(self.name)  # raises: Ember has no such dtype
        if not isinstance(dtype, _dtype.dtype):
            self.fail(f"malformed tensor dtype {dtype!r}")
        t = self._view(storage, storage_offset, size, stride, dtype)
        if requires_grad is True and t.is_floating_point():
            t._requires_grad = True
        return t

    def _rebuild_parameter(self, data, requires_grad, hooks, state=None):
        from ember.nn.parameter import Parameter

        if not isinstance(data, Tensor):
            self.fail("a Parameter is rebuilt from something that is not a tensor")
        p = Parameter(data, requires_grad=bool(requires_grad))
        self._set_state(p, state)
        return p

    def _rebuild_from_type_v2(self, func, new_type, args, state):
        if new_type not in (_TENSOR_CLASS, _PARAMETER_CLASS) or not isinstance(args, tuple):
            self.fail("only plain tensors and parameters can be rebuilt (tensor subclasses cannot)")
        if func not in (self._rebuild_tensor, self._rebuild_tensor_v3):
            self.fail("a tensor is rebuilt by an unexpected function")
        t = func(*args)
        if new_type is _PARAMETER_CLASS:
            from ember.nn.parameter import Parameter

            t = Parameter(t, requires_grad=t.requires_grad)
        self._set_state(t, state)
        return t

    def _set_state(self, obj, state) -> None:
        """Python attributes saved with a tensor (``tensor.foo = 1``): plain data only, set directly."""
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not state:
            return
        if not isinstance(state, dict) or not all(isinstance(k, str) and not k.startswith("__") for k in state):
            self.fail("malformed tensor attributes")
        obj.__dict__.update(state)

    def _device(self, kind, index=None):
        if isinstance(kind, _device_cls):
            return kind
        try:
            return _device_cls(kind) if index is None else _device_cls(kind, index)
        except Exception as exc:
            self.fail(f"unknown device {kind!r} ({exc})")


# ----------------------------------------------------------------------------------------- zip
class _ZipLoader(_Loader):
    def __init__(self, zf: zipfile.ZipFile, prefix: str, *args) -> None:
        super().__init__(*args)
        self.zf = zf
        self.prefix = prefix

    def new_storage(self, key: str, nbytes: int, itemsize: int, location: str) -> _Storage:
        try:
            info = self.zf.getinfo(f"{self.prefix}data/{key}")
        except KeyError:
            self.fail(f"storage {key!r} is missing from the archive")
        if info.file_size != nbytes:
            self.fail(f"storage {key!r} holds {info.file_size} bytes, but its tensors need {nbytes}")
        # PyTorch stores entries uncompressed; a compressed one may not claim more than deflate can give.
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else 1032
        if nbytes > max(info.compress_size, 1) * ratio:
            self.fail(f"storage {key!r} claims {nbytes} bytes from {info.compress_size} stored: corrupt")
        st = _Storage(key, nbytes, itemsize, location)
        with self.zf.open(info) as entry:
            view = memoryview(st.bytes)
            done = 0
            while done < nbytes:
                got = entry.readinto(view[done:])
                if not got:
                    self.fail(f"storage {key!r} is truncated")
                done += got
        return st


def _load_zip(fh: BinaryIO, name: str, map_location, weights_only: bool, budget: int | None) -> Any:
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"ember.load: {name} is a zip archive but not a readable one ({exc})") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if any(n.endswith("constants.pkl") for n in names):  # TorchScript archives hold data.pkl too
            raise CheckpointError(
                f"ember.load: {name} is a TorchScript archive (torch.jit.save), which holds code; Ember cannot "
                "load it (save the module's state_dict() with torch.save instead)"
            )
        if not pkl:
            raise CheckpointError(f"ember.load: {name} is a zip archive without data.pkl: not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        order = _read_small(zf, prefix + "byteorder", name) if prefix + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise CheckpointError(f"ember.load: {name}: unknown byte order {order!r}")
        info = zf.getinfo(pkl[0])
        if info.file_size > limits.max_header_bytes:
            raise CheckpointError(f"ember.load: {name}: data.pkl is {info.file_size} bytes, over the limit")
        loader = _ZipLoader(zf, prefix, name, map_location, weights_only, order == "big")
        loader.budget = budget
        try:
            unpickler = loader.unpickler(io.BytesIO(zf.read(info)))
            unpickler.persistent_load = lambda pid: loader.storage(pid, legacy=False)
            return _run(unpickler, loader)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a bad CRC, a cut entry
            raise CheckpointError(f"ember.load: {name}: corrupt zip archive ({exc})") from None


def _read_small(zf: zipfile.ZipFile, entry: str, name: str) -> str:
    try:
        return zf.read(entry).decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CheckpointError(f"ember.load: {name}: corrupt zip archive ({exc})") from None


def _run(unpickler: RestrictedUnpickler, loader: _Loader) -> Any:
    try:
        return unpickler.load()
    except pickle.UnpicklingError:
        raise
    except CheckpointError:
        raise
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        if not loader.weights_only and not isinstance(exc, (EOFError, RecursionError)):
            raise  # the file was trusted: an error of its own classes is theirs
        raise CheckpointError(
            f"ember.load: {loader.name}: corrupt PyTorch pickle ({type(exc).__name__}: {exc})"
        ) from None


# ----------------------------------------------------------------------------------------- legacy
class _LegacyLoader(_Loader):
    def new_storage(self, key: str, nbytes: int, itemsize: int, location: str) -> _Storage:
        return _Storage(key, nbytes, itemsize, location)  # filled after the object pickle, in key order


def _load_legacy(fh: BinaryIO, name: str, map_location, weights_only: bool, budget: int | None) -> Any:
    loader = _LegacyLoader(name, map_location, weights_only)
    loader.budget = budget
    for expected in (_MAGIC, _PROTOCOL_VERSION):
        if _run(loader.unpickler(fh), loader) != expected:
            raise CheckpointError(
                f"ember.load: {name} is a pickle but not a PyTorch checkpoint (it does not start with "
                "torch.save's magic number and protocol version), nor an Ember one"
            )
    info = _run(loader.unpickler(fh), loader)
    info = info if isinstance(info, dict) else {}
    if info.get("little_endian", True) is not True:
        raise CheckpointError(f"ember.load: {name} was written on a big-endian machine; Ember reads little-endian ones")
    start = fh.tell() if fh.seekable() else None
    loader.place_now = False
    unpickler = loader.unpickler(fh)
    unpickler.persistent_load = lambda pid: loader.storage(pid, legacy=True)
    result = _run(unpickler, loader)
    keys = _run(loader.unpickler(fh), loader)
    if not isinstance(keys, list):
        raise CheckpointError(f"ember.load: {name}: malformed storage key list")
    for key in keys:
        st = loader.storages.get(key) if isinstance(key, str) else None
        if st is None:
            raise CheckpointError(f"ember.load: {name}: storage {key!r} is listed but never used")
        count = int.from_bytes(read_exact(fh, 8, name, f"storage {key!r}"), "little")
        if count * st.itemsize != st.bytes.size:
            raise CheckpointError(
                f"ember.load: {name}: storage {key!r} declares {count} elements, its tensors need others"
            )
        st.bytes[:] = np.frombuffer(read_exact(fh, st.bytes.size, name, f"storage {key!r}"), np.uint8)
    if map_location is None and all(s.location == "cpu" for s in loader.storages.values()):
        return result
    if map_location is not None and not callable(map_location):
        targets = {
            str(place(_wrap(np.empty(0)), s.location, map_location, name).device) for s in loader.storages.values()
        }
        if targets <= {"cpu"}:
            return result
    if start is None:
        raise CheckpointError(f"ember.load: {name}: a legacy-format stream can only be loaded to the CPU here")
    # Place the tensors now that their data is read: run the object pickle again (storages cached).
    fh.seek(start)
    loader.place_now = True
    unpickler = loader.unpickler(fh)
    unpickler.persistent_load = lambda pid: loader.storage(pid, legacy=True)
    return _run(unpickler, loader)


def load(fh: BinaryIO, name: str, start: int | None, prefix: bytes, kind: str, map_location, weights_only) -> Any:
    """Load a PyTorch file whose first bytes ``prefix`` were read from ``fh`` (at ``start`` if seekable)."""
    budget = None
    if start is not None:
        budget = fh.seek(0, io.SEEK_END) - start
        fh.seek(start)
        stream = fh
    else:
        stream = io.BufferedReader(_Prefixed(prefix, fh))  # buffered: pickle needs whole reads
    if kind == "zip":
        if start is None:
            stream = io.BytesIO(prefix + fh.read())
        return _load_zip(stream, name, map_location, weights_only, budget)
    return _load_legacy(stream, name, map_location, weights_only, budget)


class _Prefixed(io.RawIOBase):
    """A non-seekable stream whose first bytes were already read: serves them again, then the rest."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)
