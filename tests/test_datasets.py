"""ember.datasets: Fashion-MNIST IDX reading (valid and broken files) and the character-level text dataset."""

from __future__ import annotations

import gzip
import os
import shutil
import struct

import numpy as np
import pytest

import ember
from ember.datasets import CharTextDataset, CharVocab, FashionMNIST, IDXFormatError, kjv_path, transforms
from ember.datasets.fashion_mnist import DEBIAN_ROOT
from ember.utils.data import DataLoader


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    """A tiny, independent IDX writer: magic, big-endian dims, big-endian data."""
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + np.asarray(array).astype(dt).tobytes()


def _images(n=5):
    return (np.arange(n * 28 * 28) % 256).astype(np.uint8).reshape(n, 28, 28)


def _write(folder, train=True, images=None, labels=None, gz=False, image_bytes=None, label_bytes=None):
    prefix = "train" if train else "t10k"
    images = _images() if images is None else images
    labels = (np.arange(len(images)) % 10).astype(np.uint8) if labels is None else labels
    files = {
        f"{prefix}-images-idx3-ubyte": _idx(images) if image_bytes is None else image_bytes,
        f"{prefix}-labels-idx1-ubyte": _idx(labels) if label_bytes is None else label_bytes,
    }
    for name, raw in files.items():
        path = os.path.join(folder, name + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(raw) if gz else raw)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_reads_plain_and_gzipped_idx(tmp_path, gz):
    images = _images(6)
    _write(str(tmp_path), train=False, images=images, gz=gz)
    ds = FashionMNIST(str(tmp_path), train=False)
    assert len(ds) == 6
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == ember.float32 and y == 3 and isinstance(y, int)
    np.testing.assert_allclose(x.numpy()[0], images[3] / 255.0, rtol=1e-6)
    assert ds.data.dtype == ember.uint8 and tuple(ds.data.shape) == (6, 28, 28)
    assert ds.targets.dtype == ember.int64 and ds.targets.tolist() == [0, 1, 2, 3, 4, 5]
    xs, ys = ds.arrays(flatten=True)
    assert xs.shape == (6, 784) and xs.dtype == np.float32 and float(xs.max()) <= 1.0
    tx, ty = ds.tensors()
    assert tuple(tx.shape) == (6, 1, 28, 28) and ty.tolist() == ys.tolist()


def test_fashion_mnist_torchvision_layout_transforms_and_loader(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _write(str(raw))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    ds = FashionMNIST(str(tmp_path), transform=tf, target_transform=lambda t: t * 10)
    x, y = ds[1]
    assert tuple(x.shape) == (1, 28, 28) and y == 10
    np.testing.assert_allclose(x.numpy(), (_images()[1][None] / 255.0 - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    xb, yb = next(iter(DataLoader(FashionMNIST(str(tmp_path)), batch_size=4)))
    assert tuple(xb.shape) == (4, 1, 28, 28) and yb.tolist() == [0, 1, 2, 3]


def _corrupt_cases():
    good_img, good_lab = _idx(_images()), _idx(np.arange(5, dtype=np.uint8))
    return {
        "bad magic": ({"image_bytes": b"\x08\x03" + good_img[2:]}, "magic"),
        "unknown type code": ({"image_bytes": good_img[:2] + b"\x07" + good_img[3:]}, "magic"),
        "wrong ndim": ({"image_bytes": _idx(_images().reshape(5, 784))}, "2 dimensions, expected 3"),
        "wrong dims": ({"images": np.zeros((5, 27, 28), np.uint8)}, r"dimensions \(5, 27, 28\)"),
        "truncated payload": ({"image_bytes": good_img[:-10]}, "truncated"),
        "trailing data": ({"image_bytes": good_img + b"xx"}, "trailing"),
        "truncated header": ({"image_bytes": good_img[:9]}, "truncated header"),
        "too short": ({"label_bytes": b"\x00\x00"}, "too short"),
        "count mismatch": ({"labels": np.arange(4, dtype=np.uint8)}, "5 images but .* 4 labels"),
        "label out of range": ({"labels": np.array([0, 1, 2, 3, 12], np.uint8)}, "label 12"),
        "non-byte data": ({"label_bytes": _idx(np.arange(5), code=0x0B)}, "unsigned-byte"),
        "empty label file": ({"label_bytes": b""}, "too short"),
        "good labels": ({"label_bytes": good_lab}, None),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_fashion_mnist_corrupt_files_raise_clear_errors(tmp_path, case):
    kwargs, pattern = _corrupt_cases()[case]
    _write(str(tmp_path), **kwargs)
    if pattern is None:
        assert len(FashionMNIST(str(tmp_path))) == 5
        return
    with pytest.raises(IDXFormatError, match=pattern) as info:
        FashionMNIST(str(tmp_path))
    assert isinstance(info.value, ValueError) and str(tmp_path) in str(info.value)


def test_fashion_mnist_gzip_errors_and_missing_files(tmp_path):
    _write(str(tmp_path), gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF  # inside the CRC32 trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(IDXFormatError, match="(?i)corrupt or truncated gzip.*CRC") as info:
        FashionMNIST(str(tmp_path))
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        FashionMNIST(str(tmp_path))
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        FashionMNIST(str(tmp_path))
    path.unlink()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        FashionMNIST(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        FashionMNIST(str(tmp_path / "nowhere"), train=False)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_ROOT), reason="the Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_debian_files():
    test = FashionMNIST(train=False)
    assert len(test) == 10000 and tuple(test.data.shape) == (10000, 28, 28)
    assert np.bincount(test.targets.numpy()).tolist() == [1000] * 10  # balanced classes
    x, y = test[0]
    assert FashionMNIST.classes[y] == "Ankle boot" and 0.0 <= x.numpy().min() and x.numpy().max() <= 1.0


# ----------------------------------------------------------------------------------- text
def _text_file(tmp_path, text="hello world, hello ember!\n", name="t.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_char_text_dataset_windows_splits_and_vocab(tmp_path):
    text = "The quick brown fox jumps over the lazy dög. " * 4
    path = _text_file(tmp_path, text)
    train = CharTextDataset(path, block_size=8, split="train", val_fraction=0.25)
    val = CharTextDataset(path, block_size=8, split="val", val_fraction=0.25)
    n_train = int(len(text) * 0.75)
    assert len(train) == n_train - 8 and len(val) == len(text) - n_train - 8
    assert train.vocab.itos == sorted(set(text)) and val.vocab.itos == train.vocab.itos
    for i in (0, 5, len(train) - 1, -1):
        x, y = train[i]
        j = i % len(train)
        assert x.dtype == ember.int64 and tuple(x.shape) == (8,)
        assert train.decode(x) == text[j : j + 8] and train.decode(y) == text[j + 1 : j + 9]
    assert val.decode(val[0][0]) == text[n_train : n_train + 8]
    with pytest.raises(IndexError):
        train[len(train)]
    assert train.decode(train.encode("fox dög")) == "fox dög"
    with pytest.raises(KeyError, match="'Z'"):
        train.encode("Z")
    xb, yb = train.random_batch(4, generator=ember.Generator().manual_seed(0))
    assert tuple(xb.shape) == (4, 8) and (xb[:, 1:] == yb[:, :-1]).all()
    xb2, _ = train.random_batch(4, generator=ember.Generator().manual_seed(0))
    assert xb.tolist() == xb2.tolist()
    x, y = next(iter(DataLoader(train, batch_size=3)))
    assert tuple(x.shape) == (3, 8) and y.dtype == ember.int64
    v = CharVocab.from_text("cab")
    assert v.stoi == {"a": 0, "b": 1, "c": 2} and len(v) == 3


def test_char_text_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        CharTextDataset(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="empty.txt is empty"):
        CharTextDataset(_text_file(tmp_path, "", "empty.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        CharTextDataset(str(bad))
    with pytest.raises(ValueError, match="needs more than block_size"):
        CharTextDataset(_text_file(tmp_path, "short"), block_size=64)
    with pytest.raises(ValueError, match="split"):
        CharTextDataset(_text_file(tmp_path), split="test")
    with pytest.raises(ValueError, match="val_fraction"):
        CharTextDataset(_text_file(tmp_path), val_fraction=1.0)
    with pytest.raises(IsADirectoryError):
        CharTextDataset(str(tmp_path))


@pytest.mark.skipif(shutil.which("bible") is None, reason="the Debian package bible-kjv is not installed")
def test_kjv_corpus_is_made_once_and_cached(tmp_path):
    path = kjv_path(cache=str(tmp_path))
    assert path == str(tmp_path / "kjv.txt") and os.path.getsize(path) > 4_000_000
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    mtime = os.stat(path).st_mtime_ns
    assert kjv_path(cache=str(tmp_path)) == path and os.stat(path).st_mtime_ns == mtime
    ds = CharTextDataset(path, block_size=32)
    assert "In the beginning God created the heaven and the earth." in ds.decode(ds.data[:200])
