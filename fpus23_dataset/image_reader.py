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
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from .forking import fork_is_safe
from .images import CorruptImage, ImageInfo, inspect_image

MAX_IMAGE_BYTES = 16 << 20  # bounds a batch's buffer (and a row group's dictionary page); FPUS23 frames are ~0.1 MB
READ_AHEAD = 4  # batches requested before the one being used
SLOTS = 6  # shared buffers: read ahead, the batch in use, and a few whose images are still being written
MIN_SLOT_BYTES = 32 << 20
PREFAULT_STEP = 1 << 20


T = TypeVar("T")
_END = object()


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


def _read_pooled(paths: Sequence[str], pool: _BufferPool) -> ReadBatch:
    buffers: list[bytearray] = []
    reply = read_into(paths, lambda total: buffers.append(pool.take(total)) or buffers[0])
    return ReadBatch(buffers[0], *reply)


class ThreadImageReader:
    """Batches read by one thread, a few ahead of the caller."""

    def __init__(self, read_ahead: int = READ_AHEAD):
        self.pool = _BufferPool()
        self.read_ahead = read_ahead
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="image-reader")

    def batches(self, items: Iterable[T], paths: Callable[[T], Sequence[str]],
                stalled: Callable[[], None] | None = None) -> Iterator[tuple[T, ReadBatch]]:
        """(item, its images) for each item in order, `items` taken lazily a few ahead (`stalled`: unused,
        a buffer is allocated when none is free)."""
        futures: deque = deque()
        for item in items:
            futures.append((item, self.executor.submit(_read_pooled, paths(item), self.pool)))
            if len(futures) > self.read_ahead:
                done, future = futures.popleft()
                yield done, future.result()
        while futures:
            done, future = futures.popleft()
            yield done, future.result()

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
        self.overflow = _BufferPool()  # for a batch too large for a slot, read here
        context = multiprocessing.get_context("fork")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, self.slots, prefault_bytes), name="fpus23-image-reader", daemon=True)
        self.process.start()
        child_end.close()

    def batches(self, items: Iterable[T], paths: Callable[[T], Sequence[str]],
                stalled: Callable[[], None] | None = None) -> Iterator[tuple[T, ReadBatch]]:
        """(item, its images) for each item in order, `items` taken lazily a few ahead.

        Taking the next item may take a while (the build parses the next stream): the child reads
        the batches already asked for meanwhile. While every slot is held, `stalled()` is called
        now and then: it raises if whoever releases them has failed (a batch whose write failed is
        never released).
        """
        items = iter(items)
        requested: deque[tuple[T, list[str], int]] = deque()  # asked for and not yet answered, in order
        exhausted = False
        while True:
            # Ask ahead, but hand over a batch as soon as it is read: asking for the next may wait for
            # the next stream to be parsed.
            while not exhausted and len(requested) <= self.read_ahead and not (requested and self.connection.poll()):
                if requested:
                    try:
                        slot = self.free.get_nowait()
                    except queue.Empty:
                        break
                else:  # the batch needed now: wait for a slot (written batches free theirs)
                    slot = self._free_slot(stalled)
                item = next(items, _END)
                if item is _END:
                    self.free.put(slot)
                    exhausted = True
                    break
                batch_paths = list(paths(item))
                self._send((slot, batch_paths))
                requested.append((item, batch_paths, slot))
            if not requested:
                return
            item, batch_paths, slot = requested.popleft()
            reply = self._receive()
            if reply is None:  # larger than a slot
                self.free.put(slot)
                yield item, _read_pooled(batch_paths, self.overflow)
            else:
                yield item, ReadBatch(memoryview(self.slots[slot]), *reply, slot=slot)

    def _free_slot(self, stalled: Callable[[], None] | None) -> int:
        while True:
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                if stalled is not None:
                    stalled()

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
            self.overflow.give_back(batch.buffer)
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
        # The slots are unmapped when the last view on them goes (a writer may still hold one after a failure).


def _serve(connection, slots: list[mmap.mmap], prefault_bytes: int) -> None:
    """The child: answer each (slot, paths) request with what `read_into` finds, until None.

    While no request waits, it touches the first `prefault_bytes` of each slot, a megabyte at a time:
    on a VM whose host backs guest memory lazily, a page's first touch costs about 1 s per GB.
    """
    # Only slots never asked for yet: once handed over, a slot's bytes are the parent's until released.
    untouched = {k: list(range(0, min(prefault_bytes, len(slot)), PREFAULT_STEP))[::-1] for k, slot in enumerate(slots)}
    untouched = {k: steps for k, steps in untouched.items() if steps}
    views = [memoryview(slot) for slot in slots]
    while True:
        while untouched and not connection.poll():  # only while no request waits
            k = min(untouched)
            start = untouched[k].pop()
            for offset in range(start, min(start + PREFAULT_STEP, len(slots[k])), mmap.PAGESIZE):
                slots[k][offset] = 0
            if not untouched[k]:
                del untouched[k]
        request = connection.recv()
        if request is None:
            return
        slot, paths = request
        untouched.pop(slot, None)
        try:
            reply = read_into(paths, lambda total: views[slot] if total <= len(views[slot]) else None)
        except BaseException:
            connection.send(("error", traceback.format_exc()))
            return
        connection.send(("ok", reply))


def open_image_reader(slot_bytes: int, expected_batch_bytes: int = 0, use_process: bool = True) -> ThreadImageReader | ProcessImageReader:
    """A process reader if it can be forked safely, else a thread reader."""
    if use_process and fork_is_safe():
        return ProcessImageReader(max(slot_bytes, MIN_SLOT_BYTES), slots=SLOTS, prefault_bytes=int(expected_batch_bytes * 1.25))
    return ThreadImageReader()
