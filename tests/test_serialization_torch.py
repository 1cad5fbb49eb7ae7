"""ember.load of files written by torch.save (zip and legacy layouts), with torch as the oracle."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import ember
from ember import nn
from ember.serialization import CheckpointError, load

LAYOUTS = ["zip", "legacy"]


def _torch_bytes(obj, layout: str) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=layout == "zip")
    return buf.getvalue()


def _load(obj, layout, tmp_path, **kwargs):
    path = tmp_path / f"ckpt-{layout}.pt"
    path.write_bytes(_torch_bytes(obj, layout))
    return load(str(path), **kwargs)


def _same(e, t):
    """An Ember tensor equals a torch tensor: dtype, shape, strides and values."""
    assert str(e.dtype).split(".")[-1] == str(t.dtype).split(".")[-1]
    assert tuple(e.shape) == tuple(t.shape)
    assert e.stride() == t.stride()
    np.testing.assert_array_equal(e.detach().numpy(), t.detach().numpy())


def _nanogpt_checkpoint():
    """What nanoGPT's train.py writes, from a tiny torch model and a real AdamW step."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"wte": torch.nn.Embedding(11, 8), "ln_f": torch.nn.LayerNorm(8)})
    model["lm_head"] = torch.nn.Linear(8, 11, bias=False)
    model["lm_head"].weight = model["wte"].weight
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95))
    x = torch.randint(0, 11, (2, 5))
    loss = model["lm_head"](model["ln_f"](model["wte"](x))).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    config = {"out_dir": "out", "eval_iters": 200, "learning_rate": 6e-4, "compile": False, "wandb_run_name": None}
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "model_args": {"n_layer": 1, "n_embd": 8, "vocab_size": 11, "bias": False, "dropout": 0.0},
        "iter_num": 250,
        "best_val_loss": loss.detach(),
        "config": config,
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nanogpt_checkpoint_written_by_torch_loads(tmp_path, layout):
    ckpt = _nanogpt_checkpoint()
    back = _load(ckpt, layout, tmp_path)
    assert list(back) == list(ckpt)
    assert type(back["model"]) is collections.OrderedDict and list(back["model"]) == list(ckpt["model"])
    for k, t in ckpt["model"].items():
        _same(back["model"][k], t)
    # Tied weights share one storage in the file and come back sharing memory.
    assert np.shares_memory(back["model"]["wte.weight"].numpy(), back["model"]["lm_head.weight"].numpy())
    state, want = back["optimizer"]["state"], ckpt["optimizer"]["state"]
    assert sorted(state) == sorted(want)
    for i in want:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            _same(state[i][name], want[i][name])
    assert back["optimizer"]["param_groups"] == ckpt["optimizer"]["param_groups"]
    assert back["model_args"] == ckpt["model_args"] and back["config"] == ckpt["config"] and back["iter_num"] == 250
    assert back["best_val_loss"].item() == ckpt["best_val_loss"].item() and back["best_val_loss"].shape == ()
    # The state_dict drives an Ember model with the same outputs.
    emb, ln = nn.Embedding(11, 8), nn.LayerNorm(8)
    emb.load_state_dict({"weight": back["model"]["wte.weight"]})
    ln.load_state_dict({"weight": back["model"]["ln_f.weight"], "bias": back["model"]["ln_f.bias"]})
    idx = [[1, 2, 3]]
    with torch.no_grad():
        want_h = torch.nn.functional.layer_norm(
            ckpt["model"]["wte.weight"][torch.tensor(idx)],
            (8,),
            ckpt["model"]["ln_f.weight"],
            ckpt["model"]["ln_f.bias"],
        )
    np.testing.assert_allclose(ln(emb(ember.tensor(idx))).detach().numpy(), want_h.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensors_dtypes_views_and_parameters(tmp_path, layout):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "base": base,
        "cols": base[:, 1::2],  # non-contiguous view of the same storage
        "row": base[2],  # offset into it
        "t": base.t(),
        "expanded": torch.ones(3).expand(2, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "leaf": torch.ones(2, requires_grad=True),
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "misc": [1, (2.5, "s"), None, True, {3: b"\x00\xff"}, {1, 2}, 1 + 2j],
    }
    for dt in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.float16,
        torch.float64,
    ):
        obj[str(dt)] = (torch.arange(-3, 5) % 3).to(dt)
    back = _load(obj, layout, tmp_path)
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            _same(back[k], v)
            assert back[k].requires_grad == v.requires_grad, k
            assert isinstance(back[k], nn.Parameter) == isinstance(v, torch.nn.Parameter), k
    assert back["dtype"] is ember.float16 and back["size"] == ember.Size([2, 3]) and type(back["size"]) is ember.Size
    assert back["device"] == ember.device("cpu") and back["misc"] == obj["misc"]
    back["base"].add_(100)  # views of one storage share memory, as in torch
    assert back["cols"][0, 0].item() == 101 and back["row"][0].item() == 112 and back["t"][1, 0].item() == 101


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16(tmp_path, layout):
    t = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    if hasattr(ember, "bfloat16"):
        back = _load({"t": t}, layout, tmp_path)["t"]
        assert back.dtype == ember.bfloat16 and back.float().tolist() == [1.5, -2.0, 3.25]
    else:
        with pytest.raises(CheckpointError, match=r"BFloat16Storage, which Ember has no dtype for"):
            _load({"t": t}, layout, tmp_path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_map_location_forms(tmp_path, layout):
    w = torch.arange(4.0)
    obj = {"w": w, "v": w[1:]}
    for loc in ("cpu", ember.device("cpu"), {"cpu": "cpu"}, None):
        back = _load(obj, layout, tmp_path, map_location=loc)
        assert back["w"].device == ember.device("cpu") and back["v"].tolist() == [1.0, 2.0, 3.0]
    seen = []
    back = _load(obj, layout, tmp_path, map_location=lambda storage, where: seen.append(where) or storage)
    assert seen == ["cpu"]  # once per storage, as torch calls it
    assert np.shares_memory(back["w"].numpy(), back["v"].numpy())
    back = _load(obj, layout, tmp_path, map_location=lambda storage, where: storage * 2)
    assert back["v"].tolist() == [2.0, 4.0, 6.0]


def test_map_location_for_a_cuda_checkpoint():
    """A torch-format zip whose storage says it was saved on cuda:0 (written here without a GPU)."""

    class Call:
        def __init__(self, args):
            self.args = args

        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, self.args)

    data = np.arange(3, dtype=np.float32).tobytes()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cuda:0", 3) if obj == "STORAGE" else None

    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump({"w": Call(("STORAGE", 0, (3,), (1,), False, collections.OrderedDict()))})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/data/0", data)
    raw = out.getvalue()
    for loc in ("cpu", {"cuda:0": "cpu"}, ember.device("cpu"), lambda s, where: s):
        assert load(io.BytesIO(raw), map_location=loc)["w"].tolist() == [0.0, 1.0, 2.0]
    if not ember.cuda.is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            load(io.BytesIO(raw))


def test_non_seekable_streams(tmp_path):
    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self._inner.readinto(b)

    for layout in LAYOUTS:
        back = load(Pipe(_torch_bytes({"w": torch.arange(3)[1:]}, layout)))
        assert back["w"].tolist() == [1, 2]


def test_whole_torch_module_is_refused_with_its_name(tmp_path):
    for layout in LAYOUTS:
        path = tmp_path / "m.pt"
        path.write_bytes(_torch_bytes(torch.nn.Linear(2, 2), layout))
        with pytest.raises(pickle.UnpicklingError, match=r"torch\.nn\.modules\.linear\.Linear"):
            load(path)
        with pytest.raises(pickle.UnpicklingError, match=r"Ember cannot rebuild"):
            load(path, weights_only=False)


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("evil", [_System, _Eval])
def test_hostile_torch_files_are_refused_without_running(tmp_path, layout, evil):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes({"w": torch.ones(2), "x": evil(marker)}, layout))
    name = "system" if evil is _System else "eval"
    with pytest.raises(pickle.UnpicklingError, match=rf"GLOBAL (posix|os|builtins)\.{name} was not an allowed"):
        load(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # torch refuses the same file
        torch.load(path)
    assert not marker.exists()


def test_corrupt_torch_files_are_checkpoint_errors(tmp_path):
    good = _torch_bytes({"w": torch.arange(10.0)}, "zip")
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        entries = {n: z.read(n) for n in z.namelist()}

    def rezip(**changes) -> io.BytesIO:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for n, data in entries.items():
                z.writestr(n, changes.get(n.rsplit("/", 1)[-1], data))
        out.seek(0)
        return out

    # A storage shorter than its tensor: refused, never read out of bounds.
    with pytest.raises(CheckpointError, match="storage '0' holds 8 bytes"):
        load(rezip(**{"0": entries["archive/data/0"][:8]}))
    # A tensor whose size (10 -> 20) reaches past its storage.
    pkl = entries["archive/data.pkl"]
    assert pkl.count(b"K\x00K\n\x85") == 1
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        load(rezip(**{"data.pkl": pkl.replace(b"K\x00K\n\x85", b"K\x00K\x14\x85")}))
    # A flipped byte in the pickle: the zip's CRC check catches it.
    with pytest.raises(CheckpointError, match="corrupt zip"):
        load(io.BytesIO(good.replace(b"_rebuild_tensor_v2", b"_rebuild_tensor_v9")))
    for cut in (10, 100, len(good) // 2, len(good) - 30):
        with pytest.raises((CheckpointError, pickle.UnpicklingError)):
            load(io.BytesIO(good[:cut]))
    legacy = _torch_bytes({"w": torch.arange(10.0)}, "legacy")
    for cut in range(20, len(legacy), 17):
        with pytest.raises((CheckpointError, pickle.UnpicklingError)):
            load(io.BytesIO(legacy[:cut]))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_of_the_legacy_layout(protocol):
    buf = io.BytesIO()
    w = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    torch.save({"w": w, "t": w.t()}, buf, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    buf.seek(0)
    back = load(buf)
    _same(back["w"], w)
    _same(back["t"], w.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int16, torch.float16, torch.bool])
def test_big_endian_zip_archives(dtype):
    """A file written on a big-endian machine says so in its byteorder record; values are swapped on load."""
    want = (torch.arange(-3, 5) * 3).to(dtype)
    with zipfile.ZipFile(io.BytesIO(_torch_bytes({"w": want}, "zip"))) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, data in entries.items():
            if n.endswith("byteorder"):
                data = b"big"
            elif n.endswith("data/0"):
                data = np.frombuffer(data, want.numpy().dtype).byteswap().tobytes()
            z.writestr(n, data)
    out.seek(0)
    _same(load(out)["w"], want)


class _Call:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _legacy_cuda_stream() -> bytes:
    """A legacy-layout file whose storage was saved on cuda:0 (written here without a GPU)."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.cuda.FloatStorage, "0", "cuda:0", 4, None) if obj == "STORAGE" else None

    out = io.BytesIO()
    for head in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(head, out, protocol=2)
    rebuild = torch._utils._rebuild_tensor_v2
    obj = {"w": _Call(rebuild, ("STORAGE", 0, (4,), (1,), False, collections.OrderedDict()))}
    obj["v"] = _Call(rebuild, ("STORAGE", 1, (3,), (1,), False, collections.OrderedDict()))
    Pickler(out, protocol=2).dump(obj)
    pickle.dump(["0"], out, protocol=2)
    out.write((4).to_bytes(8, "little") + np.arange(4, dtype=np.float32).tobytes())
    return out.getvalue()


def test_map_location_for_a_legacy_cuda_checkpoint(tmp_path):
    raw = _legacy_cuda_stream()
    for loc in ("cpu", {"cuda:0": "cpu"}, ember.device("cpu")):
        back = load(io.BytesIO(raw), map_location=loc)
        assert back["w"].tolist() == [0.0, 1.0, 2.0, 3.0] and back["v"].tolist() == [1.0, 2.0, 3.0]
        assert np.shares_memory(back["w"].numpy(), back["v"].numpy())
    seen = []
    back = load(io.BytesIO(raw), map_location=lambda s, where: seen.append((where, s.tolist())) or s)
    assert seen == [("cuda:0", [0.0, 1.0, 2.0, 3.0])]  # called with the data already read
    assert back["v"].tolist() == [1.0, 2.0, 3.0]
    if not ember.cuda.is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            load(io.BytesIO(raw))


def test_lying_storage_sizes_are_refused_before_allocating():
    legacy = _legacy_cuda_stream().replace(b"K\x04N", b"\x8a\x06\x00\x00\x00\x00\x00\x01N")  # numel 4 -> 2**40
    assert legacy != _legacy_cuda_stream()
    with pytest.raises(CheckpointError, match="more than the whole file"):
        load(io.BytesIO(legacy), map_location="cpu")


def test_a_run_trained_in_torch_resumes_in_ember():
    """Model and AdamW state saved by torch.save continue in Ember with the same losses."""
    torch.manual_seed(0)
    tm = torch.nn.Linear(4, 3)
    topt = torch.optim.AdamW(tm.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randn(5, 4)
    for _ in range(2):
        topt.zero_grad()
        tm(x).square().mean().backward()
        topt.step()
    ckpt = load(io.BytesIO(_torch_bytes({"model": tm.state_dict(), "optimizer": topt.state_dict()}, "zip")))
    em = nn.Linear(4, 3)
    em.load_state_dict(ckpt["model"])
    eopt = ember.optim.AdamW(em.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    eopt.load_state_dict(ckpt["optimizer"])
    ex = ember.tensor(x.numpy())
    for _ in range(3):
        topt.zero_grad()
        want = tm(x).square().mean()
        want.backward()
        topt.step()
        eopt.zero_grad()
        got = em(ex).square().mean()
        got.backward()
        eopt.step()
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
    np.testing.assert_allclose(em.weight.detach().numpy(), tm.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_plain_pickle_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(CheckpointError, match="is a pickle but not a PyTorch checkpoint"):
        load(path)


def test_bfloat16_paths_work_once_ember_has_the_dtype(monkeypatch, tmp_path):
    """The bfloat16 code paths, with a bfloat16 dtype registered for the test (ml_dtypes), as issue 11 adds it."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from ember import _dtype

    bf16 = _dtype._BY_NAME.get("bfloat16") or _dtype.dtype("bfloat16", ml_dtypes.bfloat16, _dtype._FLOAT)
    monkeypatch.setitem(_dtype._BY_NAME, "bfloat16", bf16)
    monkeypatch.setitem(_dtype._BY_NP, bf16.np, bf16)
    t = torch.tensor([[1.5, -2.0], [3.25, 7.0]], dtype=torch.bfloat16)
    for layout in LAYOUTS:
        back = _load({"t": t, "c": t.t(), "d": torch.bfloat16}, layout, tmp_path)
        assert back["t"].dtype is bf16 and back["d"] is bf16
        assert back["c"].numpy().astype(np.float32).tolist() == t.t().float().tolist()
    buf = io.BytesIO()
    ember.save({"x": back["c"]}, buf)  # and Ember's own files store it as safetensors BF16
    buf.seek(0)
    again = load(buf)["x"]
    assert again.dtype is bf16 and again.numpy().astype(np.float32).tolist() == t.t().float().tolist()
    assert b'"dtype":"BF16"' in buf.getvalue()[:400]


def test_other_zip_archives_are_named_for_what_they_are(tmp_path):
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load(scripted)
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="zip archive without data.pkl: not a PyTorch checkpoint"):
        load(plain)
