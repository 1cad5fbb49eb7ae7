"""ember.save of whole objects and the weights_only rule, checkpoints of real training scripts, safetensors dependency."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ember
from ember import nn
from ember.serialization import (
    CheckpointError,
    add_safe_globals,
    clear_safe_globals,
    get_safe_globals,
    load,
    safe_globals,
    save,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_leftover_globals():
    clear_safe_globals()
    yield
    clear_safe_globals()


def test_safetensors_is_a_core_dependency_and_save_needs_nothing_else():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("safetensors") for d in deps)
    # Ember writes and reads the safetensors container itself: saving works even without the package.
    code = (
        "import sys; sys.modules['safetensors'] = None\n"
        "import io, ember\n"
        "buf = io.BytesIO(); ember.save({'w': ember.ones(2), 'step': 3}, buf); buf.seek(0)\n"
        "print(ember.load(buf)['step'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


class _TinyGPT(nn.Module):
    def __init__(self, vocab=11, n_embd=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as nanoGPT does

    def forward(self, idx):
        return self.head(self.ln(self.wte(idx)))


def _train_step(model, opt, idx):
    logits = model(idx[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_nanogpt_checkpoint_roundtrips_and_resumes_exactly(tmp_path):
    """The dict nanoGPT's train.py saves: model/optimizer state, model_args, iter_num, best_val_loss, config."""
    ember.manual_seed(0)
    idx = ember.randint(0, 11, (4, 9))
    model = _TinyGPT()
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(3):
        _train_step(model, opt, idx)
    config = {"out_dir": "out", "eval_interval": 2000, "learning_rate": 6e-4, "compile": False, "init_from": "scratch",
              "wandb_run_name": None, "decay_lr": True, "min_lr": 6e-5}  # fmt: skip
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "model_args": {
            "n_layer": 1,
            "n_head": 2,
            "n_embd": 8,
            "block_size": 8,
            "bias": False,
            "vocab_size": 11,
            "dropout": 0.0,
        },  # fmt: skip
        "iter_num": 3,
        "best_val_loss": _train_step(model, opt, idx).detach(),  # a 0-d tensor, as estimate_loss returns
        "config": config,
    }
    path = tmp_path / "ckpt.pt"
    save(checkpoint, path)
    back = load(path)  # weights_only=True: no pickled object is needed
    assert back["iter_num"] == 3 and back["config"] == config and back["model_args"] == checkpoint["model_args"]
    assert back["best_val_loss"].shape == () and back["best_val_loss"].item() == checkpoint["best_val_loss"].item()

    resumed = _TinyGPT()
    resumed.load_state_dict(back["model"])
    ropt = ember.optim.AdamW(resumed.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ropt.load_state_dict(back["optimizer"])
    want = _train_step(model, opt, idx).item()
    assert _train_step(resumed, ropt, idx).item() == want
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_whole_module_saves_but_weights_only_load_refuses_it(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4))
    path = tmp_path / "model.pt"
    save(model, path)  # allowed, as torch.save(model) is
    with pytest.raises(pickle.UnpicklingError) as info:
        load(path)
    msg = str(info.value)
    assert "Weights only load failed" in msg and "`weights_only` set to `False`" in msg
    assert "arbitrary code execution" in msg and "trusted source" in msg
    assert "ember.nn.modules.container.Sequential" in msg and "ember.serialization.add_safe_globals" in msg
    # The same rule in PyTorch: the error type and its opening words match.
    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(buf)

    x = ember.randn(2, 3)
    back = load(path, weights_only=False)
    assert type(back) is nn.Sequential and type(back[2]) is nn.LayerNorm
    np.testing.assert_array_equal(back(x).detach().numpy(), model(x).detach().numpy())
    assert back[0].weight is not model[0].weight and isinstance(back[0].weight, nn.Parameter)

    classes = [nn.Sequential, nn.Linear, nn.ReLU, nn.LayerNorm]
    with safe_globals(classes):
        assert get_safe_globals() == classes
        allowed = load(path)  # weights_only=True with the classes allowlisted
    assert get_safe_globals() == []
    np.testing.assert_array_equal(allowed(x).detach().numpy(), model(x).detach().numpy())
    add_safe_globals(classes[:2])
    with pytest.raises(pickle.UnpicklingError, match=r"ember\.nn\.modules\.activation\.ReLU"):
        load(path)
    add_safe_globals([(nn.ReLU, "ember.nn.modules.activation.ReLU"), nn.LayerNorm])
    assert type(load(path)[1]) is nn.ReLU
    clear_safe_globals()
    assert get_safe_globals() == []
    with pytest.raises(TypeError):
        add_safe_globals(nn.ReLU)


Point = collections.namedtuple("Point", "x y")


def test_objects_inside_a_checkpoint_share_tensors_with_the_rest():
    w = ember.randn(3)
    obj = {"w": w, "p": Point(w, {1, 2}), "s": {3}}
    buf = io.BytesIO()
    save(obj, buf)
    buf.seek(0)
    with safe_globals([Point]):
        back = load(buf)
    assert type(back["p"]) is Point and back["p"].y == {1, 2} and back["s"] == {3}
    assert back["p"].x is back["w"]  # one tensor, stored once, whether inside the pickle or not


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_only_never_runs_or_imports_code_from_a_saved_object(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    save({"x": _Evil(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL (posix|os)\.system was not an allowed global"):
        load(path)
    assert not marker.exists()
    # A global in a module nobody imported is refused without importing it.
    blob = b"cxml.dom.pulldom\nfoo\n."  # GLOBAL xml.dom.pulldom foo; STOP
    assert "xml.dom.pulldom" not in sys.modules
    from ember.serialization._globals import RestrictedUnpickler

    with pytest.raises(pickle.UnpicklingError, match="xml.dom.pulldom.foo"):
        RestrictedUnpickler(io.BytesIO(blob), {}, weights_only=True).load()
    assert "xml.dom.pulldom" not in sys.modules
    # Opting in runs it, as torch.load(weights_only=False) would.
    load(path, weights_only=False)
    assert marker.exists()


def test_corrupt_object_node_is_a_checkpoint_error():
    from ember.serialization import _files

    metadata = {"ember.structure": '{"format": 1, "tensors": [], "root": {"object": "gASV"}}'}
    buf = io.BytesIO()
    _files.write({}, metadata, buf)
    buf.seek(0)
    with pytest.raises((CheckpointError, pickle.UnpicklingError)):
        load(buf)
