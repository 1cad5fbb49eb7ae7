"""Checkpoints: ``ember.save`` and ``ember.load``, in a format whose weights-only load never runs code.

``ember.save`` writes one ordinary `safetensors <https://github.com/huggingface/safetensors>`_
file: the arrays as safetensors entries, the structure of the saved object (nested dicts, lists,
tuples, numbers, strings, None, and references to the arrays) as JSON in its metadata. See
:mod:`ember.serialization._structure` for the layout. ``ember.load`` also reads PyTorch's own
files (``torch.save``'s zip format and the legacy pre-1.6 format) with a restricted unpickler.

Behaviour, compared with ``torch.save``/``torch.load``:

- Tensors saved in two places (tied weights) are stored once. The same Tensor object comes back as
  one object; distinct tensors over the same memory (``state_dict()`` entries of a tied weight)
  come back as distinct tensors sharing one array. Partly overlapping views are stored as copies.
- ``requires_grad`` and the ``Parameter`` type are kept, as PyTorch keeps them (a ``state_dict()``
  holds detached tensors, so it has neither). Gradients and autograd history are not saved.
- Any other object (a whole Module, an optimizer, a user class) can be saved, as with
  ``torch.save``: it is pickled, with its tensors stored as safetensors entries. ``ember.load``
  refuses to rebuild it by default (``weights_only=True``, PyTorch's default since 2.6) with
  ``pickle.UnpicklingError`` naming the class; allowlist trusted classes with
  :func:`add_safe_globals` / :func:`safe_globals`, or pass ``weights_only=False`` for a file you
  trust (that runs the pickle's code).
- ``map_location``: None (each tensor on its saved device), a device or string, a dict
  ``{saved: target}``, or a callable ``f(tensor_on_cpu, saved_location) -> tensor``.
- ``pickle_module`` is ignored; ``pickle_protocol`` is used for pickled objects.

Writes are atomic: a temporary file in the target directory is written, fsynced and renamed over
the target, so a crash leaves the old checkpoint or the new one, never half of one. Temporary
files left by killed processes are removed by the next save to that folder. A full disk raises
``OSError``. Files are read within :data:`limits`.

Example:
    >>> import io, ember
    >>> buf = io.BytesIO()
    >>> ember.save({"w": ember.ones(2), "epoch": 3}, buf)
    >>> _ = buf.seek(0)
    >>> ember.load(buf)
    {'w': tensor([1., 1.]), 'epoch': 3}
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from ember.serialization import _files, _torch
from ember.serialization._files import CheckpointError, limits
from ember.serialization._globals import add_safe_globals, clear_safe_globals, get_safe_globals, safe_globals
from ember.serialization._structure import FORMAT, STRUCTURE_KEY, Decoder, Encoder

__all__ = [
    "CheckpointError",
    "add_safe_globals",
    "clear_safe_globals",
    "get_safe_globals",
    "limits",
    "load",
    "safe_globals",
    "save",
]

PathOrFile = str | os.PathLike | BinaryIO


def save(
    obj: Any, f: PathOrFile, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True
) -> None:
    """Save ``obj`` to ``f``: a path (written atomically) or a writable binary file object.

    Tensors, NumPy arrays, numbers, strings, None and dicts/lists/tuples of them are stored as
    data; any other object is pickled (and needs ``weights_only=False`` or an allowlist to load).
    ``pickle_module`` and ``_use_new_zipfile_serialization`` exist for ``torch.save``
    compatibility and are ignored.

    Example:
        >>> import ember, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
        >>> ember.save({"model": {"w": ember.zeros(2)}, "epoch": 1}, path)
        >>> ember.load(path)["epoch"]
        1
    """
    enc = Encoder(pickle_protocol)
    root = enc.encode(obj)
    structure = json.dumps({"format": FORMAT, "tensors": enc.table, "root": root}, allow_nan=False)
    metadata = {"format": "ember", STRUCTURE_KEY: structure}
    if hasattr(f, "write"):
        _files.write(enc.arrays, metadata, f)
        return
    _files.write_path(os.fspath(f), lambda fh: _files.write(enc.arrays, metadata, fh))


def load(
    f: PathOrFile, map_location=None, pickle_module=None, *, weights_only: bool | None = True, mmap=None, **kwargs
) -> Any:
    """Load an object saved by :func:`save`, or by ``torch.save`` (a path or a readable binary file).

    A plain safetensors file without Ember's structure loads as a dict of tensors. A PyTorch file
    loads with its tensors as Ember tensors (dtype, shape, strides and shared storage kept). A
    truncated, corrupt or hostile file raises :class:`CheckpointError` (a RuntimeError) naming the
    file; a class or function the file needs that is not allowlisted raises
    ``pickle.UnpicklingError`` under ``weights_only=True`` (the default; None means True).

    Example:
        >>> import io, ember
        >>> buf = io.BytesIO(); w = ember.ones(2)
        >>> ember.save({"a": w, "b": w}, buf); _ = buf.seek(0)
        >>> d = ember.load(buf)
        >>> d["a"] is d["b"]
        True
    """
    weights_only = True if weights_only is None else bool(weights_only)
    fh, name, size, owned = _files.open_source(f)
    try:
        start = fh.tell() if fh.seekable() else None
        prefix = fh.read(8)
        if not isinstance(prefix, (bytes, bytearray)):
            raise TypeError(f"ember.load: {name} must be opened in binary mode")
        kind = _torch.sniff(prefix)
        if kind is not None:
            return _torch.load(fh, name, start, prefix, kind, map_location, weights_only)
        contents = _files.read_safetensors(fh, name, size, prefix)
    finally:
        if owned:
            fh.close()
    dec = Decoder(contents, map_location, weights_only)
    structure = contents.metadata.get(STRUCTURE_KEY)
    if structure is None:
        return dec.plain()
    if not isinstance(structure, str):
        dec.fail("the structure metadata is not a string")
    try:
        doc = json.loads(structure)
    except (ValueError, RecursionError) as exc:
        dec.fail(f"the structure metadata is not valid JSON ({exc})")
    if not isinstance(doc, dict) or "root" not in doc or not isinstance(doc.get("tensors"), list):
        dec.fail("the structure metadata lacks its 'root' or 'tensors' fields")
    if doc.get("format") != FORMAT:
        dec.fail(f"checkpoint format {doc.get('format')!r} is not supported (this Ember reads format {FORMAT})")
    dec.table = doc["tensors"]
    return dec.decode(doc["root"])
