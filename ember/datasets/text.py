"""Character-level text data: a vocabulary (``CharVocab``) and next-character windows (``CharTextDataset``).

The default corpus is the King James Bible from the Debian package ``bible-kjv``. The package
stores the text in its own compressed format (``/usr/lib/bible.data``) that only its ``bible``
program reads, so the first use runs ``bible "gen1:1-rev22:21"`` once and caches the output
(about 4.3 MB) under ``$XDG_CACHE_HOME/ember`` (default ``~/.cache/ember``), written atomically.
No network is used.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable

import numpy as np

from ember.random import Generator, numpy_generator
from ember.tensor import Tensor, _wrap
from ember.utils.data.dataset import Dataset

__all__ = ["KJV_RANGE", "cache_dir", "kjv_path", "CharVocab", "CharTextDataset"]

KJV_RANGE = "gen1:1-rev22:21"


def cache_dir() -> str:
    """Ember's cache directory: ``$XDG_CACHE_HOME/ember`` or ``~/.cache/ember``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ember")


def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def kjv_path(cache: str | None = None) -> str:
    """The path of the King James Bible as plain text, producing the cached copy on first use.

    Raises FileNotFoundError when neither the cache nor the ``bible`` program (Debian package
    ``bible-kjv``) is there, and RuntimeError when the program fails.
    """
    path = os.path.join(cache or cache_dir(), "kjv.txt")
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return path
    exe = shutil.which("bible")
    if exe is None:
        raise FileNotFoundError(
            f"the default corpus {path} does not exist and the 'bible' program to make it is not installed "
            "(apt-get install bible-kjv), or pass path= to a UTF-8 text file"
        )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # fixed line width: reproducible text
    try:
        run = subprocess.run([exe, KJV_RANGE], capture_output=True, env=env, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"running {exe} {KJV_RANGE!r} to make {path} failed: {exc}") from None
    if run.returncode != 0 or not run.stdout.strip():
        err = run.stderr.decode(errors="replace").strip()[:300]
        raise RuntimeError(f"{exe} {KJV_RANGE!r} exited with code {run.returncode} and no text: {err}")
    _write_atomic(path, run.stdout)
    return path


class CharVocab:
    """The characters of a text, sorted by code point, with their integer ids.

    Example:
        >>> from ember.datasets import CharVocab
        >>> v = CharVocab.from_text("hello")
        >>> v.itos, v.encode("hole"), v.decode([2, 3])
        (['e', 'h', 'l', 'o'], [1, 3, 2, 0], 'lo')
    """

    def __init__(self, chars: Iterable[str]) -> None:
        self.itos: list[str] = list(chars)
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``'s characters; KeyError names a character outside the vocabulary."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise KeyError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.itos[i] for i in ids)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"CharTextDataset: {path} is not UTF-8 text ({exc})") from None
    if not text:
        raise ValueError(f"CharTextDataset: {path} is empty")
    return text


class CharTextDataset(Dataset):
    """Windows of ``block_size`` characters and the same window shifted by one (next-character targets).

    The text is split by position: the first ``1 - val_fraction`` is ``'train'``, the rest ``'val'``.
    The vocabulary (``.vocab``) comes from the whole text, so both splits share it. Item ``i`` is
    ``(x, y)`` with ``x = ids[i : i + block_size]`` and ``y = ids[i + 1 : i + block_size + 1]``,
    int64 tensors. :meth:`random_batch` draws a whole ``(B, block_size)`` batch at once.

    Example:
        >>> import os, tempfile
        >>> from ember.datasets import CharTextDataset
        >>> p = os.path.join(tempfile.mkdtemp(), "t.txt")
        >>> _ = open(p, "w").write("abcabcabcabc")
        >>> ds = CharTextDataset(p, block_size=4, val_fraction=0.25)
        >>> x, y = ds[0]
        >>> ds.vocab.decode(x), ds.vocab.decode(y), len(ds)
        ('abca', 'bcab', 5)
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        block_size: int = 64,
        split: str = "train",
        val_fraction: float = 0.1,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"CharTextDataset: split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"CharTextDataset: val_fraction must be in [0, 1), got {val_fraction}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"CharTextDataset: block_size must be a positive int, got {block_size!r}")
        self.path = kjv_path() if path is None else os.fspath(path)
        self.block_size = block_size
        self.split = split
        text = _read_text(self.path)
        # Code points as an array; a lookup table over them gives the sorted vocabulary and every
        # id in linear time (sorting 4M characters with np.unique is several times slower).
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        present = np.zeros(int(codes.max()) + 1, dtype=bool)
        present[codes] = True
        self.vocab = CharVocab(chr(c) for c in np.flatnonzero(present).tolist())
        ids = (np.cumsum(present, dtype=np.int64) - 1)[codes]
        n_train = int(len(ids) * (1.0 - val_fraction))
        self._ids = ids[:n_train] if split == "train" else ids[n_train:]
        if len(self._ids) <= block_size:
            raise ValueError(
                f"CharTextDataset: the {split!r} split of {self.path} has {len(self._ids)} characters; "
                f"it needs more than block_size={block_size}"
            )
        self.data: Tensor = _wrap(self._ids)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def stoi(self) -> dict[str, int]:
        return self.vocab.stoi

    @property
    def itos(self) -> list[str]:
        return self.vocab.itos

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        return self.vocab.decode(ids)

    def __len__(self) -> int:
        return len(self._ids) - self.block_size

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for CharTextDataset of length {n}")
        chunk = self._ids[index : index + self.block_size + 1]
        return _wrap(chunk[:-1].copy()), _wrap(chunk[1:].copy())

    def random_batch(self, batch_size: int, generator: Generator | None = None) -> tuple[Tensor, Tensor]:
        """``batch_size`` random windows as ``(x, y)``, each ``(batch_size, block_size)`` int64.

        Example:
            >>> import ember, os, tempfile
            >>> from ember.datasets import CharTextDataset
            >>> p = os.path.join(tempfile.mkdtemp(), "t.txt"); _ = open(p, "w").write("hello world")
            >>> x, y = CharTextDataset(p, block_size=3, val_fraction=0.0).random_batch(2)
            >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
            (ember.Size([2, 3]), True)
        """
        starts = numpy_generator(generator).integers(0, len(self), size=batch_size)
        rows = starts[:, None] + np.arange(self.block_size + 1)
        window = self._ids[rows]
        return _wrap(np.ascontiguousarray(window[:, :-1])), _wrap(np.ascontiguousarray(window[:, 1:]))
