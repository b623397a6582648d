from __future__ import annotations

import errno
import fcntl
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fpus23_dataset import direct_io
from fpus23_dataset.direct_io import BLOCK, DirectFile


def _parts(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * 65536 + 7] + [rnd.randrange(0, 300_000) for _ in range(12)]
    return [rnd.randbytes(n) for n in sizes]


def test_bytes_and_size_are_exact_whatever_the_write_sizes(tmp_path):
    parts = _parts(1)
    with DirectFile(tmp_path / "f.bin", chunk=16 * BLOCK) as sink:
        for part in parts:
            assert sink.write(part) == len(part)
        assert sink.tell() == sum(map(len, parts))
    assert (tmp_path / "f.bin").read_bytes() == b"".join(parts)  # no padding left at the end


def test_a_filesystem_refusing_direct_writes_gets_plain_ones(tmp_path, monkeypatch):
    parts = _parts(2)
    real_write, refused = os.pwrite, []

    def write(fd, data, offset):  # as a filesystem that accepts O_DIRECT at open but not for writes
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct_io.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", write)
    sink = DirectFile(tmp_path / "f.bin", chunk=16 * BLOCK)
    if not sink.direct:
        pytest.skip("this filesystem refuses O_DIRECT at open")
    for part in parts:
        sink.write(part)
    sink.close()
    assert 1 <= len(refused) <= direct_io.BUFFERS - 1 and not sink.direct  # each write in flight may meet the refusal once
    assert (tmp_path / "f.bin").read_bytes() == b"".join(parts)


def test_without_o_direct_it_is_a_plain_file(tmp_path, monkeypatch):
    monkeypatch.setattr(direct_io, "O_DIRECT", 0)
    parts = _parts(3)
    with DirectFile(tmp_path / "f.bin", chunk=BLOCK) as sink:
        for part in parts:
            sink.write(part)
    assert not sink.direct and (tmp_path / "f.bin").read_bytes() == b"".join(parts)


def test_parquet_written_through_it_is_identical(tmp_path):
    table = pa.table({"b": pa.array([random.Random(k).randbytes(50_000 + k) for k in range(40)]), "k": pa.array(range(40))})
    pq.write_table(table, tmp_path / "plain.parquet", compression="NONE")
    with DirectFile(tmp_path / "direct.parquet") as sink:
        pq.write_table(table, sink, compression="NONE")
    assert (tmp_path / "direct.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert pq.read_table(tmp_path / "direct.parquet").equals(table)


def test_it_never_replaces_a_file(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        DirectFile(tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == b"keep"


def test_a_failed_background_write_reaches_the_caller(tmp_path, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "pwrite", full)
    sink = DirectFile(tmp_path / "f.bin", chunk=BLOCK)
    with pytest.raises(OSError, match="No space"):
        for _ in range(4):
            sink.write(bytes(BLOCK))
        sink.close()
    try:
        sink.close()  # may report the other buffer's failed write too; the descriptor is released either way
    except OSError:
        pass
    assert sink.closed
    sink.close()


def test_files_written_one_after_another_can_share_their_buffers(tmp_path):
    shared = direct_io.DirectBuffers(chunk=16 * BLOCK)
    for seed in (4, 5, 6):
        parts = _parts(seed)
        with DirectFile(tmp_path / f"{seed}.bin", chunk=16 * BLOCK, buffers=shared) as sink:
            for part in parts:
                sink.write(part)
        assert (tmp_path / f"{seed}.bin").read_bytes() == b"".join(parts)
    assert not any(buffer.closed for buffer in shared.buffers)  # still the caller's to reuse
    with pytest.raises(ValueError, match="chunks of"):
        DirectFile(tmp_path / "other.bin", chunk=32 * BLOCK, buffers=shared)
    assert not (tmp_path / "other.bin").exists()


def test_writes_finishing_out_of_order_land_at_their_offsets(tmp_path, monkeypatch):
    """Two chunks are written at once; the later one may finish first."""
    import threading
    import time

    real_pwrite, first_done, order = os.pwrite, threading.Event(), []

    def slow_first(fd, data, offset):
        if offset == 0:
            time.sleep(0.2)  # the second chunk's write runs meanwhile
            first_done.set()
        order.append(offset)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", slow_first)
    parts = _parts(7)
    with DirectFile(tmp_path / "f.bin", chunk=4 * BLOCK) as sink:
        for part in parts:
            sink.write(part)
    assert order[0] != 0  # a later chunk did overtake the first
    assert (tmp_path / "f.bin").read_bytes() == b"".join(parts)
