"""Write large output files with direct I/O, through one reused aligned buffer.

A build writes its Parquet files once and does not read them back. Through the page cache, each
written page is fresh memory the kernel must find (on a VM, memory the host may have to back first),
and the written data evicts the user's cached files. With O_DIRECT the bytes go from one 8 MB
buffer, reused for the whole file, straight to the disk. Where the filesystem refuses O_DIRECT
(tmpfs, some network and FUSE filesystems), the file is written through the page cache as usual.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

BLOCK = 4096  # O_DIRECT wants offsets, lengths and the buffer address aligned (512 B suffices on most disks)
CHUNK = 8 << 20
O_DIRECT = getattr(os, "O_DIRECT", 0)


class DirectFile:
    """A write-only binary file object (what pyarrow needs: write, tell, flush, close, closed)."""

    def __init__(self, path: Path | str, chunk: int = CHUNK):
        if chunk % BLOCK:
            raise ValueError(f"chunk {chunk} is not a multiple of {BLOCK}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(path, flags | O_DIRECT)
            self.direct = bool(O_DIRECT)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, flags)
            self.direct = False
        self._buffer = mmap.mmap(-1, chunk)  # page-aligned
        self._view = memoryview(self._buffer)
        self._chunk = chunk
        self._filled = 0
        self._written = 0
        self.closed = False
        self.name = str(path)

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        size, start = len(data), 0
        while start < size:
            take = min(self._chunk - self._filled, size - start)
            self._view[self._filled : self._filled + take] = data[start : start + take]
            self._filled += take
            start += take
            if self._filled == self._chunk:
                self._flush_buffer(self._chunk)
        self._written += size
        return size

    def _flush_buffer(self, length: int) -> None:
        view = self._view[:length]
        while len(view):
            try:
                done = os.write(self._fd, view)
            except OSError as error:
                if error.errno != errno.EINVAL or not self.direct:
                    raise
                self._stop_direct()  # opened with O_DIRECT but the filesystem refuses the writes
                continue
            view = view[done:]
        self._filled = 0

    def _stop_direct(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~O_DIRECT)
        self.direct = False

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass  # whole blocks only: the tail is written on close

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._filled:
                if self.direct:
                    padded = -(-self._filled // BLOCK) * BLOCK
                    self._view[self._filled : padded] = bytes(padded - self._filled)
                    self._flush_buffer(padded)
                    os.ftruncate(self._fd, self._written)
                else:
                    self._flush_buffer(self._filled)
        finally:
            os.close(self._fd)
            self.closed = True
            self._view.release()
            self._buffer.close()

    def __enter__(self) -> "DirectFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
