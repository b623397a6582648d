"""Read and check a build's image files, batch by batch, in order, without decoding them.

A batch's images are read back to back into one buffer and each PNG's chunk CRCs are checked where
it lies (see `images.inspect_image`). Where it can, a forked child process does this, into shared
memory slots the parent reuses: in a thread, the four system calls per file (open, fstat, readv,
close) each gave up and took back the GIL, and with the build's main and writer threads busy, each
wait for it cost more than the call. Reading and checking the 1.47 GB of the 34 shared streams took
0.5 s alone and 1.9 s as a thread of the build. Where fork is unavailable, or other threads already
run (a fork copies the locks they hold), a thread reads instead; the batches are the same.
"""
from __future__ import annotations

import mmap
import multiprocessing
import os
import queue
import threading
import traceback
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from .images import CorruptImage, ImageInfo, inspect_image

MAX_IMAGE_BYTES = 16 << 20  # bounds a batch's buffer (and a row group's dictionary page); FPUS23 frames are ~0.1 MB
READ_AHEAD = 4  # batches requested before the one being used
SLOTS = 6  # shared buffers: read ahead, the batch in use, and a few whose images are still being written
MIN_SLOT_BYTES = 32 << 20


class ImageReaderError(RuntimeError):
    """The reader process failed or vanished; its traceback, if any, is in the message."""


@dataclass
class ReadBatch:
    """Images of consecutive frames, read into one buffer; `infos[k]` is None where frame k is unusable."""

    buffer: bytearray | memoryview
    offsets: array  # len(frames) + 1; an unusable frame takes no bytes
    infos: list[ImageInfo | None]
    digests: list[str]  # the image's content digest, or why the frame is unusable when its info is None
    slot: int | None = None  # the shared slot holding it (process reader)

    def image(self, position: int) -> memoryview:
        return memoryview(self.buffer)[self.offsets[position] : self.offsets[position + 1]]


Reply = tuple[array, list, list]


def read_into(paths: Sequence[str], buffer_for: Callable[[int], bytearray | memoryview | None]) -> Reply | None:
    """Read and check files into one buffer: (offsets, infos, digests), or None if `buffer_for(total)` gives none.

    Plain descriptors and one readv per file: Python file objects cost more than the copy itself.
    """
    opened = _open_all(paths)
    try:
        total = sum(item[1] for item in opened if isinstance(item, tuple) and item[1] <= MAX_IMAGE_BYTES)
        buffer = buffer_for(total)
        if buffer is None:
            return None
        view = memoryview(buffer)
        offsets = array("q", [0])
        infos: list[ImageInfo | None] = []
        digests: list[str] = []
        beyond = bytearray(1)  # a byte read past the expected end means the file grew
        for item in opened:
            start = offsets[-1]
            try:
                if isinstance(item, OSError):
                    raise item
                fd, size = item
                if size > MAX_IMAGE_BYTES:
                    raise CorruptImage(f"file is over {MAX_IMAGE_BYTES >> 20} MB, far larger than any ultrasound frame")
                if os.readv(fd, [view[start : start + size], beyond]) != size:
                    raise CorruptImage("file changed while it was being read")
                info = inspect_image(view[start : start + size], verify=True)
                infos.append(info)
                digests.append(info.digest)
                offsets.append(start + size)
            except CorruptImage as error:
                infos.append(None)
                digests.append(str(error))
                offsets.append(start)
            except OSError as error:
                infos.append(None)
                digests.append(f"cannot read: {error.strerror or error}")
                offsets.append(start)
        view.release()
    finally:
        for item in opened:
            if isinstance(item, tuple):
                os.close(item[0])
    return offsets, infos, digests


def _open_all(paths: Sequence[str]) -> list[tuple[int, int] | OSError]:
    """(descriptor, size) of each file, or why it cannot be opened."""
    out: list[tuple[int, int] | OSError] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            out.append(error)
            continue
        try:
            out.append((fd, os.fstat(fd).st_size))
        except OSError as error:
            os.close(fd)
            out.append(error)
    return out


class _BufferPool:
    """Read buffers, reused from batch to batch once their images are in the file.

    Memory a process touches for the first time costs far more than a copy on a VM whose host backs
    guest memory lazily (here about 0.4 GB/s against 10 GB/s for memory already touched): a fresh
    buffer per batch made faulting pages in a large part of the build.
    """

    def __init__(self) -> None:
        self.free: list[bytearray] = []
        self.lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self.lock:
            if self.free:
                buffer = max(self.free, key=len)
                self.free.remove(buffer)
                if len(buffer) >= size:
                    return buffer
        return bytearray(size + size // 4)  # headroom: the next batch may be a little larger

    def give_back(self, buffer: bytearray) -> None:
        with self.lock:
            self.free.append(buffer)


class ThreadImageReader:
    """Batches read by one thread, a few ahead of the caller."""

    def __init__(self, read_ahead: int = READ_AHEAD):
        self.pool = _BufferPool()
        self.read_ahead = read_ahead
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="image-reader")

    def _read(self, paths: Sequence[str]) -> ReadBatch:
        buffers: list[bytearray] = []
        reply = read_into(paths, lambda total: buffers.append(self.pool.take(total)) or buffers[0])
        return ReadBatch(buffers[0], *reply)

    def batches(self, batches: Sequence[Sequence[str]]) -> Iterator[ReadBatch]:
        futures: deque = deque()
        for paths in batches:
            futures.append(self.executor.submit(self._read, paths))
            if len(futures) > self.read_ahead:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()

    def release(self, batch: ReadBatch) -> None:
        """Called from any thread once the batch's images are written."""
        self.pool.give_back(batch.buffer)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class ProcessImageReader:
    """Batches read by a forked child process into shared slots; the parent reads a batch too large for a slot."""

    def __init__(self, slot_bytes: int, slots: int = SLOTS, read_ahead: int = READ_AHEAD, prefault_bytes: int = 0):
        self.slots = [mmap.mmap(-1, max(slot_bytes, mmap.PAGESIZE)) for _ in range(slots)]  # shared with the child
        self.read_ahead = min(read_ahead, slots - 1)
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(slots):
            self.free.put(slot)
        self.overflow = ThreadImageReader(read_ahead=0)
        context = multiprocessing.get_context("fork")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, self.slots, prefault_bytes), name="fpus23-image-reader", daemon=True)
        self.process.start()
        child_end.close()

    def batches(self, batches: Sequence[Sequence[str]]) -> Iterator[ReadBatch]:
        requested: deque[int] = deque()  # slots of requests sent and not yet answered, in order
        sent = 0
        for number, paths in enumerate(batches):
            while sent < len(batches) and len(requested) <= self.read_ahead:
                if sent == number:  # the batch needed now: wait for a slot (written batches free theirs)
                    slot = self.free.get()
                else:
                    try:
                        slot = self.free.get_nowait()
                    except queue.Empty:
                        break
                self._send((slot, list(batches[sent])))
                requested.append(slot)
                sent += 1
            slot = requested.popleft()
            reply = self._receive()
            if reply is None:  # larger than a slot
                self.free.put(slot)
                yield next(self.overflow.batches([paths]))
            else:
                yield ReadBatch(memoryview(self.slots[slot]), *reply, slot=slot)

    def _send(self, request: tuple[int, list[str]]) -> None:
        try:
            self.connection.send(request)
        except OSError as error:
            raise self._ended() from error

    def _receive(self) -> Reply | None:
        try:
            kind, payload = self.connection.recv()
        except (EOFError, OSError) as error:
            raise self._ended() from error
        if kind == "error":
            raise ImageReaderError(f"the image reader process failed:\n{payload}")
        return payload

    def _ended(self) -> ImageReaderError:
        self.process.join(timeout=1)
        return ImageReaderError(f"the image reader process ended unexpectedly (exit code {self.process.exitcode})")

    def release(self, batch: ReadBatch) -> None:
        """Called from any thread once the batch's images are written."""
        if batch.slot is None:
            self.overflow.release(batch)
        else:
            self.free.put(batch.slot)

    def close(self) -> None:
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()
        self.overflow.close()
        # The slots are unmapped when the last view on them goes (a writer may still hold one after a failure).


def _serve(connection, slots: list[mmap.mmap], prefault_bytes: int) -> None:
    """The child: answer each (slot, paths) request with what `read_into` finds, until None.

    First it touches the first `prefault_bytes` of each slot, while the parent still plans: on a VM
    whose host backs guest memory lazily, a page's first touch costs about 1 s per GB.
    """
    for slot in slots:
        for offset in range(0, min(prefault_bytes, len(slot)), mmap.PAGESIZE):
            slot[offset] = 0
    views = [memoryview(slot) for slot in slots]
    while True:
        request = connection.recv()
        if request is None:
            return
        slot, paths = request
        try:
            reply = read_into(paths, lambda total: views[slot] if total <= len(views[slot]) else None)
        except BaseException:
            connection.send(("error", traceback.format_exc()))
            return
        connection.send(("ok", reply))


def can_fork_reader() -> bool:
    """A forked child is safe only while this process runs one thread, and only where fork exists."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def open_image_reader(slot_bytes: int, expected_batch_bytes: int = 0, use_process: bool = True) -> ThreadImageReader | ProcessImageReader:
    """A process reader if it can be forked safely, else a thread reader."""
    if use_process and can_fork_reader():
        return ProcessImageReader(max(slot_bytes, MIN_SLOT_BYTES), prefault_bytes=int(expected_batch_bytes * 1.25))
    return ThreadImageReader()
