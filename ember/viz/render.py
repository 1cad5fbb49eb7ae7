"""Turn DOT text into a picture with Graphviz's ``dot`` program (SVG, PNG, PDF), or keep the text."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import warnings

__all__ = ["render"]

_FORMATS = ("svg", "png", "pdf", "dot")


def render(dot_source: str, path: str | os.PathLike, format: str | None = None) -> pathlib.Path:
    """Write ``dot_source`` to ``path`` as a picture and return the path written.

    The format comes from ``format`` or else from the suffix (``.svg``, ``.png``, ``.pdf``,
    ``.dot``). Pictures need Graphviz's ``dot`` program (Debian package ``graphviz``); when it
    is missing, the DOT text is written next to ``path`` with suffix ``.dot``, a warning names
    the missing program, and that ``.dot`` path is returned.

    Example:
        >>> import ember, tempfile, pathlib
        >>> from ember.viz import forward_dot, render
        >>> x = ember.ones(3, requires_grad=True)
        >>> out = render(forward_dot((x * 2).sum()), pathlib.Path(tempfile.mkdtemp()) / "g.dot")
        >>> out.suffix
        '.dot'
    """
    path = pathlib.Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in _FORMATS:
        raise ValueError(f"render(): unknown format {fmt!r} for {str(path)!r}; expected one of {', '.join(_FORMATS)}")
    if fmt == "dot":
        path.write_text(dot_source)
        return path
    exe = shutil.which("dot")
    if exe is None:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_source)
        warnings.warn(
            f"render(): Graphviz's 'dot' program was not found on PATH, so {fmt} could not be made; "
            f"wrote the DOT source to {fallback} instead (install the 'graphviz' package)",
            RuntimeWarning,
            stacklevel=2,
        )
        return fallback
    proc = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_source.encode(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"render(): 'dot -T{fmt}' failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    return path
