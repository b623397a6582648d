from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fpus23_dataset.image_reader import ImageReaderError, ProcessImageReader, ThreadImageReader

from helpers import write_png


@pytest.fixture()
def files(tmp_path):
    """PNGs of different sizes, one with a flipped byte, one empty, one missing."""
    paths = []
    for k in range(23):
        path = tmp_path / f"frame_{k:06d}.png"
        write_png(path, size=(16 + 9 * k, 12 + 5 * k), seed=k)
        paths.append(str(path))
    data = bytearray(open(paths[7], "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(paths[7], "wb").write(bytes(data))
    open(paths[11], "wb").close()
    paths[15] = str(tmp_path / "gone.png")
    return paths


def _collect(reader, batches):
    out = []
    try:
        for _, batch in reader.batches(batches, lambda paths: paths):
            out.append(([bytes(batch.image(k)) for k in range(len(batch.infos))], list(batch.infos), list(batch.digests), batch.slot))
            reader.release(batch)
    finally:
        reader.close()
    return out


def test_process_and_thread_readers_give_the_same_batches(files):
    batches = [files[k : k + 4] for k in range(0, len(files), 4)]
    by_thread = _collect(ThreadImageReader(read_ahead=2), batches)
    sizes = [sum(os.path.getsize(p) for p in batch if os.path.exists(p)) for batch in batches]
    # Slots that hold the smaller batches only: the larger ones are read by the parent instead.
    slot = sorted(sizes)[len(sizes) // 2]
    by_process = _collect(ProcessImageReader(slot, slots=2, read_ahead=3), batches)
    assert [b[:3] for b in by_process] == [b[:3] for b in by_thread]
    assert {b[3] is None for b in by_process} == {True, False}  # some in slots, some too large for one
    images, infos, digests, _ = by_thread[1]
    assert infos[3] is None and "CRC" in digests[3]  # frame 7
    assert images[3] == b""
    assert by_thread[2][1][3] is None and by_thread[2][2][3] == "empty file"  # frame 11
    assert by_thread[3][1][3] is None and by_thread[3][2][3].startswith("cannot read")  # frame 15
    assert images[0] == open(files[4], "rb").read() and infos[0].width == 16 + 9 * 4


def test_a_slot_is_reused_only_once_released(files):
    batches = [files[k : k + 2] for k in range(0, 20, 2)]
    reader = ProcessImageReader(1 << 20, slots=3, read_ahead=2)
    held = []
    try:
        for paths, batch in reader.batches(iter(batches), lambda paths: paths):
            assert len(batch.infos) == len(paths)
            assert batch.slot not in {b.slot for b in held}
            held.append(batch)
            if len(held) == 2:  # keep two batches, as queued writes do
                reader.release(held.pop(0))
    finally:
        reader.close()


def test_a_reader_process_that_dies_is_an_error_not_a_hang(files):
    reader = ProcessImageReader(1 << 20, slots=2)
    os.kill(reader.process.pid, signal.SIGKILL)
    reader.process.join()
    with pytest.raises(ImageReaderError, match="ended unexpectedly"):
        list(reader.batches([files[:3]], lambda paths: paths))
    reader.close()


def test_no_fork_while_other_threads_run():
    """In a fresh process (earlier tests leave threads behind): a running thread rules forking out,
    tqdm's monitor thread, which a library's progress bar leaves behind, does not."""
    code = """
import threading
from tqdm.std import tqdm
from fpus23_dataset import image_reader
from fpus23_dataset.forking import fork_is_safe
kinds = [type(image_reader.open_image_reader(1 << 20)).__name__]
started, stop = threading.Event(), threading.Event()
worker = threading.Thread(target=lambda: (started.set(), stop.wait()))
worker.start(); started.wait()
kinds.append(type(image_reader.open_image_reader(1 << 20)).__name__)
stop.set(); worker.join()
with tqdm(total=1, disable=True):
    pass
assert any(type(t).__name__ == "TMonitor" for t in threading.enumerate())
kinds.append(type(image_reader.open_image_reader(1 << 20)).__name__)
print(*kinds, fork_is_safe())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["ProcessImageReader", "ThreadImageReader", "ProcessImageReader", "True"], done.stderr[-2000:]


def test_readying_idle_slots_never_touches_a_batch_handed_over(files):
    """The child touches the pages of slots not yet used while it waits; a batch in the parent's hands stays intact."""
    batches = [files[k : k + 3] for k in range(0, 21, 3)]
    expected = {p: open(p, "rb").read() for p in files if os.path.exists(p)}
    reader = ProcessImageReader(1 << 20, slots=4, read_ahead=1, prefault_bytes=1 << 20)
    try:
        for paths, batch in reader.batches(batches, lambda paths: paths):
            time.sleep(0.05)  # the child is idle meanwhile, readying the slots not yet used
            for k, path in enumerate(paths):
                if batch.infos[k] is not None:
                    assert bytes(batch.image(k)) == expected[path], path
            reader.release(batch)
    finally:
        reader.close()


def test_a_reader_left_idle_before_its_first_request_serves_it(files):
    """The child readies its slots while it waits; with nothing to ready (prefault 0) it must just wait."""
    for prefault in (0, 3 << 20):
        reader = ProcessImageReader(1 << 20, slots=2, prefault_bytes=prefault)
        try:
            time.sleep(0.3)  # the child is up and idle before the first request
            assert reader.process.is_alive()
            ((_, batch),) = list(reader.batches([files[:2]], lambda paths: paths))
            assert bytes(batch.image(0)) == open(files[0], "rb").read()
        finally:
            reader.close()
