"""``python -m ember.as_torch``: unmodified PyTorch scripts import Ember's modules as ``torch``."""

import subprocess
import sys
import textwrap


def _run(tmp_path, script: str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, "-m", "ember.as_torch", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_script_imports_resolve_to_ember(tmp_path):
    (tmp_path / "helper_mod.py").write_text("import torch\n\ndef total():\n    return torch.ones(3).sum().item()\n")
    out = _run(
        tmp_path,
        """
        import sys
        import torch
        import torch.nn as nn
        from torch.nn import functional as F
        from torch.utils.data import DataLoader
        import helper_mod
        assert torch.__name__ == "ember"
        assert nn.Module is torch.nn.Module and F.relu is torch.nn.functional.relu
        assert DataLoader.__module__.startswith("ember.")
        print(helper_mod.total(), sys.argv[1:], __name__)
        """,
        "--flag",
        "x",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0 ['--flag', 'x'] __main__"


def test_missing_module_names_torch_path(tmp_path):
    out = _run(tmp_path, "import torch.no_such_module\n")
    assert out.returncode != 0
    assert "No module named 'torch.no_such_module'" in out.stderr


def test_install_refuses_when_real_torch_is_loaded():
    import pytest
    import torch  # noqa: F401  (the oracle is loaded in the test process)

    import ember.as_torch

    with pytest.raises(RuntimeError, match="real torch is already imported"):
        ember.as_torch.install()
