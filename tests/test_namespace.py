"""``import ember as torch``: the top-level names ordinary PyTorch code reaches for exist."""

import numpy as np
import torch

import ember

NAMES = """tensor zeros ones arange randn manual_seed no_grad float32 long cat stack softmax log_softmax
    sigmoid tanh relu matmul einsum where nn optim utils save load device cuda autograd linalg Size""".split()


def test_torch_names_exist():
    missing = [n for n in NAMES if not hasattr(ember, n)]
    assert not missing, missing


def test_softmax_function_and_method_match_torch():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    for dim in (0, 1, -1):
        np.testing.assert_allclose(
            ember.softmax(ember.tensor(x), dim).numpy(), torch.softmax(torch.tensor(x), dim).numpy(), rtol=1e-5
        )
        np.testing.assert_allclose(
            ember.tensor(x).log_softmax(dim).numpy(), torch.tensor(x).log_softmax(dim).numpy(), rtol=1e-5, atol=1e-6
        )


def test_no_internals_leak_into_the_namespace():
    leaked = [
        n for n in ("np", "math", "record", "Add", "Node", "grad_state", "CPU", "apply", "sum_to") if hasattr(ember, n)
    ]
    assert not leaked, leaked


def test_every_module_declares_all():
    """Each module says what it exports (``__all__``), and every name it lists exists. The four
    re-exporting namespaces (``ember``, ``ember.ops``, ``ember.nn``, ``ember.nn.functional``) are
    exempt: their public names are the PyTorch namespace they mirror."""
    import importlib
    import pkgutil

    import ember

    namespaces = {"ember", "ember.ops", "ember.nn", "ember.nn.functional"}
    missing, dangling = [], []
    for info in pkgutil.walk_packages(ember.__path__, "ember."):
        if info.name.endswith("__main__") or info.name in namespaces:
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError:  # optional dependencies (CuPy, onnx) absent
            continue
        if "__all__" not in vars(mod):
            missing.append(info.name)
        dangling += [f"{info.name}.{n}" for n in vars(mod).get("__all__", ()) if not hasattr(mod, n)]
    assert not missing, missing
    assert not dangling, dangling
