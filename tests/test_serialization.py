"""ember.save / ember.load: round trips (compared with torch.save/torch.load), sharing, atomicity, hostile files."""

from __future__ import annotations

import collections
import io
import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch

import ember
from ember import nn
from ember.serialization import CheckpointError, _files, load, save


def _checkpoint(lib):
    """The same training checkpoint built with either library."""
    w = lib.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    model = collections.OrderedDict([("fc.weight", w), ("fc.bias", lib.tensor([0.5, -1.0])), ("steps", lib.tensor(7))])
    optim = {
        "state": {0: {"step": lib.tensor(3.0), "exp_avg": lib.zeros(2, 3)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "amsgrad": False}],
    }
    return {"model": model, "optimizer": optim, "epoch": 3, "loss": 0.25, "name": "run-1", "rng": lib.get_rng_state()}


def _shape_of(x):
    """Types and values of a loaded checkpoint, library-neutral."""
    if isinstance(x, (ember.Tensor, torch.Tensor)):
        return ("tensor", str(x.dtype).split(".")[-1], tuple(x.shape), x.requires_grad, type(x).__name__)
    if isinstance(x, dict):
        return (type(x).__name__, [(k, _shape_of(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_shape_of(v) for v in x])
    return x


def _roundtrip(obj, **load_kwargs):
    buf = io.BytesIO()
    save(obj, buf)
    buf.seek(0)
    return load(buf, **load_kwargs)


def test_training_checkpoint_roundtrip_matches_torch(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save(_checkpoint(ember), str(path))
    got = load(str(path))
    torch.save(_checkpoint(torch), tmp_path / "ckpt.pt")
    want = torch.load(tmp_path / "ckpt.pt")
    e_shape, t_shape = _shape_of(got), _shape_of(want)
    # rng states differ in size between the libraries; everything else has the same structure.
    assert e_shape[1][:-1] == t_shape[1][:-1]
    assert got["model"]["fc.weight"].tolist() == want["model"]["fc.weight"].tolist()
    assert got["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert got["optimizer"]["state"][0]["step"].tolist() == 3.0  # int keys survive JSON
    gen = ember.Generator()
    gen.set_state(got["rng"])  # the saved RNG state restores
    assert gen.initial_seed() == ember.initial_seed()


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_dtypes_roundtrip_exactly(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)) * 1000
    if dtype == "bool":
        a = a > 0
    arr = a.astype(dtype)
    if dtype.startswith("float"):
        arr.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    for t in (
        ember.from_numpy(arr),
        ember.from_numpy(arr[0, 1, ...]),
        ember.from_numpy(arr[:, ::2]),
        ember.from_numpy(arr[:0]),
    ):
        back = _roundtrip({"t": t})["t"]
        assert back.dtype == t.dtype and tuple(back.shape) == tuple(t.shape)
        assert back.numpy().tobytes() == np.ascontiguousarray(t.numpy()).tobytes()


def test_plain_values_roundtrip():
    obj = {
        "none": None,
        "t": True,
        "big": 2**70,
        "neg": -5,
        "f": 0.1,
        "nan": float("nan"),
        "inf": -float("inf"),
        "s": "ünïcode",
        "nested": [1, (2, [3, {"k": ()}]), []],
        7: "int key",
        (1, "a"): "tuple key",
        None: "none key",
        "dtype": ember.float16,
        "device": ember.device("cpu"),
        "size": ember.Size([2, 3]),
        "bytes": b"\x00\xff",
        "np": np.arange(4, dtype=np.int16),
        "npscalar": np.float32(1.5),
        "od": collections.OrderedDict([("b", 1), ("a", 2)]),
    }
    back = _roundtrip(obj)
    assert np.isnan(back.pop("nan")) and np.isnan(obj.pop("nan"))
    np.testing.assert_array_equal(back.pop("np"), obj.pop("np"))
    assert back == obj
    assert type(back["od"]) is collections.OrderedDict and list(back["od"]) == ["b", "a"]
    assert type(back["size"]) is ember.Size and back["dtype"] is ember.float16
    assert isinstance(back["nested"][1], tuple) and isinstance(back["nested"][1][1], list)


def test_requires_grad_and_parameter_kept_like_torch():
    for lib, mod in ((ember, nn), (torch, torch.nn)):
        obj = {
            "plain": lib.ones(2, requires_grad=True),
            "param": mod.Parameter(lib.ones(2)),
            "frozen": mod.Parameter(lib.ones(2), requires_grad=False),
            "detached": lib.ones(2, requires_grad=True).detach(),
        }
        if lib is ember:
            back = _roundtrip(obj)
        else:
            buf = io.BytesIO()
            torch.save(obj, buf)
            buf.seek(0)
            back = torch.load(buf)
        shapes = {k: _shape_of(v) for k, v in back.items()}
        if lib is ember:
            ember_shapes = shapes
        else:
            assert ember_shapes == shapes


def test_shared_tensors_stored_once_and_come_back_shared():
    w = ember.randn(64, 64)
    model = nn.Module()
    model.emb = nn.Parameter(w)
    sd = {"emb.weight": model.emb.detach(), "head.weight": model.emb.detach()}  # a tied state_dict
    buf = io.BytesIO()
    save({"sd": sd, "same": [w, w]}, buf)
    single = io.BytesIO()
    save({"w": w}, single)
    assert len(buf.getvalue()) < len(single.getvalue()) + 2048  # 16 KiB of data stored once, not three times
    buf.seek(0)
    back = load(buf)
    a, b = back["sd"]["emb.weight"], back["sd"]["head.weight"]
    assert a is not b and a.numpy() is b.numpy()  # distinct tensors over one array, like torch storages
    a.add_(1)
    assert b.tolist() == a.tolist()
    assert back["same"][0] is back["same"][1]
    assert back["same"][0].numpy() is a.numpy()


def test_map_location_forms():
    obj = {"w": ember.ones(2)}
    assert load(io.BytesIO(_bytes(obj)), map_location="cpu")["w"].device == ember.device("cpu")
    assert load(io.BytesIO(_bytes(obj)), map_location={"cuda:0": "cpu"})["w"].tolist() == [1.0, 1.0]
    seen = []
    back = load(io.BytesIO(_bytes(obj)), map_location=lambda t, loc: seen.append(loc) or t * 2)
    assert seen == ["cpu"] and back["w"].tolist() == [2.0, 2.0]
    with pytest.raises(CheckpointError, match="device"):
        load(io.BytesIO(_bytes(obj)), map_location="nosuchdevice")


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    save(obj, buf)
    return buf.getvalue()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save({"v": 1}, path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())

    def broken(arrays, metadata, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_files, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        save({"v": 2, "t": ember.ones(3)}, path)
    monkeypatch.undo()
    assert load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary file left behind
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="circular"):
        save(loop, path)
    assert load(path) == {"v": 1}


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_plain_safetensors_file_loads_as_dict(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"a": np.arange(3, dtype=np.int32), "b": np.ones((2, 2), np.float32)}, str(path))
    back = load(str(path))
    assert sorted(back) == ["a", "b"] and back["a"].dtype == ember.int32 and back["b"].tolist() == [[1, 1], [1, 1]]
    # And an Ember checkpoint is a valid safetensors file for other readers.
    save({"x": ember.arange(4)}, path)
    assert list(safetensors.numpy.load_file(str(path)).values())[0].tolist() == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------- hostile files
def _craft(header: dict, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def _with_structure(structure, tensors=None) -> bytes:
    tensors = tensors or {"0": np.arange(3, dtype=np.float32)}
    text = structure if isinstance(structure, str) else json.dumps(structure)
    return safetensors.numpy.save(tensors, metadata={"format": "ember", "ember.structure": text})


def _nested(levels: int) -> str:
    return '{"format": 1, "tensors": [], "root": ' + '{"list": [' * levels + "]}" * levels + "}"


HOSTILE = {
    "empty": b"",
    "too short": b"\x01\x02",
    "huge header length": struct.pack("<Q", 2**63) + b"{}",
    "header longer than file": struct.pack("<Q", 100) + b"{}",
    "non-JSON header": struct.pack("<Q", 4) + b"\xff\xfe{[",
    "header not an object": _craft([1, 2]),
    "unknown dtype": _craft({"x": {"dtype": "F8_E5M2", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
    "bad shape": _craft({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "huge shape": _craft({"x": {"dtype": "F64", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
    "offsets past end": _craft({"x": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}}, b"\0" * 4),
    "overlapping": _craft(
        {
            "x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "y": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
        },
        b"\0" * 6,
    ),
    "missing tensor": _with_structure({"format": 1, "tensors": [{"storage": "9"}], "root": {"tensor": 0}}),
    "bad tensor index": _with_structure({"format": 1, "tensors": [], "root": {"tensor": 5}}),
    "unhashable storage": _with_structure({"format": 1, "tensors": [{"storage": [1]}], "root": {"tensor": 0}}),
    "unknown node": _with_structure({"format": 1, "tensors": [], "root": {"pickle": "cos\nsystem\n"}}),
    "two-key node": _with_structure({"format": 1, "tensors": [], "root": {"list": [], "dict": []}}),
    "unhashable key": _with_structure({"format": 1, "tensors": [], "root": {"dict": [[{"list": []}, 1]]}}),
    "deep nesting": _with_structure(_nested(250)),
    "nesting deeper than JSON allows": _with_structure(_nested(5000)),
    "structure not JSON": safetensors.numpy.save({}, metadata={"ember.structure": "{not json"}),
    "future format": _with_structure({"format": 99, "tensors": [], "root": None}),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_raise_checkpoint_error_naming_the_file(tmp_path, case):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(HOSTILE[case])
    with pytest.raises(CheckpointError, match="evil.ckpt") as info:
        load(str(path))
    assert isinstance(info.value, RuntimeError)


def test_every_truncation_and_random_corruption_is_a_clean_error():
    good = _bytes(_checkpoint(ember))
    for cut in range(0, len(good), max(1, len(good) // 300)):
        with pytest.raises(CheckpointError):
            load(io.BytesIO(good[:cut]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        bad = bytearray(good)
        for pos in rng.integers(0, len(bad), size=3):
            bad[pos] = int(rng.integers(0, 256))
        try:
            load(io.BytesIO(bytes(bad)))  # a flip inside tensor data still loads: that is fine
        except CheckpointError:
            pass


def test_missing_file_and_text_mode():
    with pytest.raises(FileNotFoundError):
        load("/nonexistent/ckpt.safetensors")
    with pytest.raises(TypeError, match="binary mode"):
        load(io.StringIO("abc"))
