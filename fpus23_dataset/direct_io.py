"""Write large output files with direct I/O, from a few reused aligned buffers, in the background.

A build writes its Parquet files once and does not read them back. Through the page cache, each
written page is fresh memory the kernel must find (on a VM, memory the host may have to back first),
and the written data evicts the user's cached files. With O_DIRECT the bytes go from 8 MB buffers,
reused for the whole build, straight to the disk: a background thread writes a full buffer while the
caller fills the next. Where the filesystem refuses O_DIRECT (some network and FUSE filesystems), the
file is written through the page cache as usual.

The files of a build share one `DirectBuffers`: its thread writes them one after another, in order,
and closing a file only queues its last block, so the caller goes on with the next file while the
disk finishes the last (a build writes a file per stream; waiting at each file's end kept the disk
idle for a fifth of the build). `DirectBuffers.finish` waits for it all and raises a failed write.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

BLOCK = 4096  # O_DIRECT wants offsets, lengths and the buffer address aligned (512 B suffices on most disks)
CHUNK = 8 << 20
O_DIRECT = getattr(os, "O_DIRECT", 0)


class DirectBuffers:
    """Page-aligned buffers, used in turn, and the one thread that writes them out, in order."""

    def __init__(self, chunk: int = CHUNK, count: int = 3):
        if chunk % BLOCK:
            raise ValueError(f"chunk {chunk} is not a multiple of {BLOCK}")
        self.chunk = chunk
        self.buffers = [mmap.mmap(-1, chunk) for _ in range(count)]  # page-aligned
        self.views = [memoryview(b) for b in self.buffers]
        self.pending: list[Future | None] = [None] * count  # the background write of each buffer
        self.tasks: list[Future] = []  # other background work (closing files), until `finish`
        self.next = 0
        self.flusher = ThreadPoolExecutor(1, thread_name_prefix="direct-io")

    def take(self) -> int:
        """The next buffer, once its earlier write is done (which re-raises that write's failure)."""
        index, self.next = self.next, (self.next + 1) % len(self.buffers)
        self._wait(index)
        return index

    def write_out(self, index: int, write: Callable[[memoryview], None], length: int) -> None:
        """`write(buffer[:length])` in the background; the buffer is not taken again before it is done."""
        self.pending[index] = self.flusher.submit(write, self.views[index][:length])

    def later(self, fn: Callable[[], None]) -> None:
        """`fn()` in the background, after every write queued so far."""
        self.tasks.append(self.flusher.submit(fn))

    def _wait(self, index: int) -> None:
        future, self.pending[index] = self.pending[index], None
        if future is not None:
            future.result()

    def finish(self) -> None:
        """Wait for every queued write and task; raise the first failure."""
        failure = None
        for future in [*self.pending, *self.tasks]:
            if future is not None:
                try:
                    future.result()
                except BaseException as error:  # noqa: BLE001 - every future is waited for; the first failure is raised
                    failure = failure or error
        self.pending = [None] * len(self.buffers)
        self.tasks = []
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Finish (failures ignored: a caller that cares calls `finish` first) and free the buffers."""
        try:
            self.finish()
        except BaseException:  # noqa: BLE001
            pass
        self.flusher.shutdown(wait=True)
        for view, buffer in zip(self.views, self.buffers):
            view.release()
            with contextlib.suppress(BufferError):  # a slice still held somewhere: freed with it instead
                buffer.close()


class DirectFile:
    """A write-only binary file object (what pyarrow needs: write, tell, flush, close, closed).

    With `buffers` shared by several files, `close` returns once the file's last block is queued;
    `buffers.finish()` says when every file is complete. Without, the file has its own and `close`
    waits.
    """

    def __init__(self, path: Path | str, chunk: int = CHUNK, buffers: DirectBuffers | None = None):
        if buffers is not None and buffers.chunk != chunk:
            raise ValueError(f"buffers of {buffers.chunk} bytes for a file written in chunks of {chunk}")
        self._own = buffers is None
        self._pool = DirectBuffers(chunk, count=2) if buffers is None else buffers
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(path, flags | O_DIRECT)
            self.direct = bool(O_DIRECT)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, flags)
            self.direct = False
        self._chunk = chunk
        self._index: int | None = None  # the buffer being filled, taken at the first byte
        self._filled = 0
        self._written = 0
        self.closed = False
        self.name = str(path)

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        size, start = len(data), 0
        while start < size:
            if self._index is None:
                self._index = self._pool.take()
            take = min(self._chunk - self._filled, size - start)
            self._pool.views[self._index][self._filled : self._filled + take] = data[start : start + take]
            self._filled += take
            start += take
            if self._filled == self._chunk:
                self._pool.write_out(self._index, self._write_out, self._chunk)
                self._index, self._filled = None, 0
        self._written += size
        return size

    def _write_out(self, view: memoryview) -> None:
        while len(view):
            try:
                done = os.write(self._fd, view)
            except OSError as error:
                if error.errno != errno.EINVAL or not self.direct:
                    raise
                self._stop_direct()  # opened with O_DIRECT but the filesystem refuses the writes
                continue
            view = view[done:]

    def _stop_direct(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~O_DIRECT)
        self.direct = False

    def _write_tail(self, view: memoryview) -> None:
        """The last, partial block: written padded to a whole block (O_DIRECT), the file then cut to size."""
        self._write_out(view)
        if len(view) != self._written % self._chunk:
            os.ftruncate(self._fd, self._written)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass  # whole blocks only: the tail is written on close

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._filled:
                index, filled = self._index, self._filled
                padded = -(-filled // BLOCK) * BLOCK if self.direct else filled
                self._pool.views[index][filled:padded] = bytes(padded - filled)
                self._pool.write_out(index, self._write_tail, padded)
            self._index, self._filled = None, 0
            self._pool.later(lambda: os.close(self._fd))
            if self._own:
                self._pool.finish()
        finally:
            if self._own:
                self._pool.close()

    def __enter__(self) -> "DirectFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
