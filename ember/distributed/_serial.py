"""A restricted, data-only encoding for object collectives (never pickle).

``broadcast_object_list`` and ``all_gather_object`` move Python objects between ranks. PyTorch
pickles them, so a peer can make the receiver run code. Here objects are encoded as JSON with
tags for the few non-JSON types, and decoding only ever builds plain data: None, bool, int,
float (nan/inf too), str, bytes, list, tuple, set, dict (any encodable keys), NumPy arrays and
ember Tensors. Anything else is a TypeError on the sender.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

__all__ = ["dumps", "loads"]


def _enc(o):
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, int):
        return o if abs(o) < 2**53 else {"$int": str(o)}
    if isinstance(o, float):
        return o if math.isfinite(o) else {"$float": repr(o)}
    if isinstance(o, (list,)):
        return [_enc(x) for x in o]
    if isinstance(o, tuple):
        return {"$tuple": [_enc(x) for x in o]}
    if isinstance(o, (set, frozenset)):
        return {"$set": [_enc(x) for x in o]}
    if isinstance(o, dict):
        return {"$dict": [[_enc(k), _enc(v)] for k, v in o.items()]}
    if isinstance(o, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(o)).decode("ascii")}
    if isinstance(o, np.generic):
        return _enc(o.item())
    from ember.tensor import Tensor

    if isinstance(o, Tensor):
        return {"$tensor": _enc(np.asarray(o.detach().cpu()._data)), "rg": bool(o.requires_grad)}
    if isinstance(o, np.ndarray):
        a = np.ascontiguousarray(o).reshape(o.shape)  # ascontiguousarray makes a 0-d array 1-d
        return {"$array": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.name, "shape": list(a.shape)}
    raise TypeError(
        f"ember.distributed object collectives send plain data only (None, bool, int, float, str, bytes, "
        f"list, tuple, set, dict, NumPy arrays, Tensors); got {type(o).__name__}"
    )


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    dt = np.dtype(name)
    if dt.kind not in "biufc":
        raise ValueError(f"object collective: refusing array dtype {name}")
    return dt


def _dec(o):
    if isinstance(o, list):
        return [_dec(x) for x in o]
    if not isinstance(o, dict):
        return o
    if "$int" in o:
        return int(o["$int"])
    if "$float" in o:
        return float(o["$float"])
    if "$tuple" in o:
        return tuple(_dec(x) for x in o["$tuple"])
    if "$set" in o:
        return {_dec(x) for x in o["$set"]}
    if "$dict" in o:
        return {_hashable(_dec(k)): _dec(v) for k, v in o["$dict"]}
    if "$bytes" in o:
        return base64.b64decode(o["$bytes"])
    if "$array" in o:
        raw = base64.b64decode(o["$array"])
        return np.frombuffer(raw, dtype=_dtype(o["dtype"])).reshape(o["shape"]).copy()
    if "$tensor" in o:
        from ember.tensor import _wrap

        t = _wrap(_dec(o["$tensor"]))
        if o.get("rg"):
            t.requires_grad_(True)
        return t
    raise ValueError(f"object collective: unknown tag in {sorted(o)}")


def _hashable(k):
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


def dumps(obj) -> bytes:
    return json.dumps(_enc(obj), separators=(",", ":")).encode("utf-8")


def loads(data: bytes):
    return _dec(json.loads(data.decode("utf-8")))
