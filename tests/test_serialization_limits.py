"""ember.save/ember.load under faults: killed saves, full disks, absurd or huge headers, non-regular files."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ember
from ember.serialization import CheckpointError, limits, load, save

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_processes_are_removed_on_the_next_save(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - 3600
        dead = tmp_path / f".ckpt.pt.{_dead_pid()}.0123abcd.tmp"
        other_dead = tmp_path / f".other.bin.{_dead_pid()}.deadbeef.tmp"
        alive = tmp_path / f".ckpt.pt.{live.pid}.89abcdef.tmp"
        mine = tmp_path / f".ckpt.pt.{os.getpid()}.00000000.tmp"
        fresh = tmp_path / f".ckpt.pt.{_dead_pid()}.11111111.tmp"  # dead writer, but touched just now
        unrelated = tmp_path / ".notes.12.tmp"
        not_a_pid = tmp_path / f".ckpt.pt.{2**80}.22222222.tmp"
        for p in (dead, other_dead, alive, mine, fresh, unrelated, not_a_pid):
            p.write_bytes(b"x" * 100)
            if p is not fresh:
                os.utime(p, (old, old))
        save({"w": ember.ones(2)}, tmp_path / "ckpt.pt")
        assert not dead.exists() and not other_dead.exists()
        assert alive.exists() and mine.exists() and fresh.exists() and unrelated.exists() and not_a_pid.exists()
        assert load(tmp_path / "ckpt.pt")["w"].tolist() == [1.0, 1.0]
    finally:
        live.kill()
        live.wait()


def test_killed_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    path = tmp_path / "ckpt.pt"
    code = (
        "import os, ember\n"
        "from ember.serialization import _files\n"
        "real = _files.write\n"
        "def write(arrays, metadata, fh):\n"
        "    real(arrays, metadata, fh); fh.flush(); os._exit(9)  # killed after writing, before the rename\n"
        "_files.write = write\n"
        f"ember.save({{'w': ember.zeros(1000)}}, {str(path)!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert out.returncode == 9
    (left,) = [p for p in tmp_path.iterdir()]
    assert left.name.startswith(".ckpt.pt.") and left.stat().st_size > 4000
    old = time.time() - 3600
    os.utime(left, (old, old))
    save({"w": ember.ones(1)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_disk_full_is_an_oserror_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save({"v": 1}, path)
    # A file-size limit makes the kernel refuse the write (EFBIG), as a full disk does (ENOSPC).
    code = (
        "import resource, signal, sys, ember\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    ember.save({{'w': ember.zeros(1 << 20)}}, {str(path)!r})\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc.errno)\n"
        "    sys.exit(0)\n"
        "sys.exit('no OSError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1] == "27"  # EFBIG
    assert load(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # the temporary file is gone


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_device_stream_is_an_oserror():
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as f:
            save({"w": ember.zeros(100_000)}, f)
    assert info.value.errno == 28  # ENOSPC


def _craft(header: dict, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@pytest.mark.parametrize(
    "shape",
    [[2**62, 2**62, 0], [1] * 100, [2**31, 2**31, 2**31, 0], [0, 2**63 - 1]],
    ids=["2^62", "100 dims", "2^93", "2^63"],
)
def test_absurd_shapes_are_checkpoint_errors(shape):
    data = _craft({"x": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0 if 0 in shape else 4]}}, b"\0" * 4)
    with pytest.raises(CheckpointError, match="dimensions|impossibly large"):
        load(io.BytesIO(data))


def test_hostile_header_with_a_million_tensors_is_refused_fast():
    n = 1_300_000
    entry = b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    raw = b"{" + b",".join(entry % i for i in range(n)) + b"}"
    assert len(raw) > 75_000_000
    data = struct.pack("<Q", len(raw)) + raw
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"declares 1300000 tensors, more than the limit of \d+"):
        load(io.BytesIO(data))
    assert time.perf_counter() - start < 1.5  # was 15.7 s; counting is a bytes scan, before any JSON parse


def test_limits_can_be_raised_for_trusted_files(monkeypatch):
    buf = io.BytesIO()
    save([ember.zeros(1) + i for i in range(20)], buf)
    monkeypatch.setattr(limits, "max_tensors", 10)
    with pytest.raises(CheckpointError, match="max_tensors"):
        load(io.BytesIO(buf.getvalue()))
    monkeypatch.setattr(limits, "max_tensors", 20)
    assert len(load(io.BytesIO(buf.getvalue()))) == 20
    monkeypatch.setattr(limits, "max_header_bytes", 64)
    with pytest.raises(CheckpointError, match="max_header_bytes"):
        load(io.BytesIO(buf.getvalue()))
    monkeypatch.setattr(limits, "max_header_bytes", 1 << 20)
    monkeypatch.setattr(limits, "max_depth", 3)
    save([[[[[1]]]]], buf := io.BytesIO())
    with pytest.raises(CheckpointError, match="deeper than 3"):
        load(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_non_regular_files_are_refused(path):
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="not a regular file"):
        load(path)
    assert time.perf_counter() - start < 1.0


def test_streams_are_read_only_as_far_as_the_header_declares():
    with open("/dev/zero", "rb") as f:  # an endless stream: an 8-byte zero length, then nothing valid
        with pytest.raises(CheckpointError):
            load(f)
    good = io.BytesIO()
    save({"w": ember.arange(3)}, good)
    stream = io.BytesIO(good.getvalue() + b"trailing data that is not read")
    assert load(stream)["w"].tolist() == [0, 1, 2]
    assert stream.read() == b"trailing data that is not read"


def test_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load(str(fifo))  # refused without opening it (opening a FIFO blocks until a writer comes)


def test_huge_declared_tensor_in_a_short_stream_is_refused_before_allocating():
    header = {"x": {"dtype": "F64", "shape": [2**20, 2**20], "data_offsets": [0, 2**43]}}
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(io.BytesIO(_craft(header, b"\0" * 64)))


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_filesystem_is_an_oserror_and_leaves_the_old_file(tiny_tmpfs):
    path = tiny_tmpfs / "ckpt.pt"
    save({"v": 1, "w": ember.ones(10)}, path)
    with pytest.raises(OSError) as info:
        save({"w": ember.zeros(1 << 20)}, path)  # 4 MiB into 256 KiB
    assert info.value.errno == 28  # ENOSPC, and an OSError (safetensors raised SafetensorError)
    assert load(path)["v"] == 1
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["ckpt.pt"]


def test_header_of_millions_of_json_values_is_refused_before_parsing():
    structure = '{"format": 1, "tensors": [], "root": {"list": [' + ",".join(["0"] * 5_000_000) + "]}}"
    raw = json.dumps({"__metadata__": {"ember.structure": structure}}).encode()
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="JSON values, more than the limit"):
        load(io.BytesIO(struct.pack("<Q", len(raw)) + raw))
    assert time.perf_counter() - start < 1.0
