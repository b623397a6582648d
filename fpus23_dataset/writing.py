"""The build's second pass: planned frames -> Parquet shards of one shared table per split, card, report.

Split by split, in batches of READ_BATCH frames that `image_reader` reads and checks (each PNG
chunk's CRC) in a child process, each batch becomes one row group: a row per frame and config, the
image column a Parquet dictionary, so each image is stored once and all rows of its frame point to
it. The images go from the read buffer into the file (see `parquet_images`), never decoded; one
writer thread writes the row groups in order while the main thread prepares the next.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pyarrow as pa

from . import __version__
from .build import BUILD_MARKER, BuildError, BuildResult, PlannedFrame
from .card import render_card
from .direct_io import DirectBuffers, DirectFile
from .features import CONFIG_COLUMN, DATA_DIR, stored_arrow_schema
from .image_reader import ProcessImageReader, ReadBatch, ThreadImageReader
from .images import ImageInfo
from .parquet_images import ImageParquetWriter
from .progress import tqdm
from .report import Report
from .row_group import RowGroupRows
from .sources import Source, configs_of
from .validate import fit_to_image, relative

DATA_PAGE_BYTES = 1 << 20
READ_BATCH = 256  # frames per read batch and per row group: one read buffer, each image stored once
WRITES_IN_FLIGHT = 4  # row groups queued for the writer thread
DIRECT_IO = True  # Parquet files written with O_DIRECT (see direct_io); False: through the page cache


def _fingerprint(source: Source, image_digests: dict[str, str]) -> str:
    """SHA-256 over every export's bytes and every image's content digest (see `ImageInfo.digest`)."""
    digest = hashlib.sha256()
    xmls = sorted(xml for s in source.streams.values() for xml in s.xml_files)
    for xml in xmls:
        digest.update(f"xml {relative(xml, source.root)} {hashlib.sha256(xml.read_bytes()).hexdigest()}\n".encode())
    for image_id in sorted(image_digests):
        digest.update(f"image {image_id} {image_digests[image_id]}\n".encode())
    return digest.hexdigest()


class _WriteQueue:
    """One writer thread: writes run in order; a bounded number wait at once.

    pyarrow releases the GIL while it encodes, and the disk writes run in `DirectFile`'s own thread,
    so the writes overlap the reads (in `image_reader`) and the main thread preparing the next row group.
    """

    def __init__(self, in_flight: int = WRITES_IN_FLIGHT):
        self.executor = ThreadPoolExecutor(1)
        self.pending: deque = deque()
        self.in_flight = in_flight

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        self.pending.append(self.executor.submit(fn, *args, **kwargs))
        while len(self.pending) > self.in_flight:
            self.pending.popleft().result()  # re-raises a failed write here

    def raise_if_failed(self) -> None:
        """Re-raise the failure of a write already done, if any."""
        for future in self.pending:
            if future.done():
                future.result()

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self, cancel_pending: bool = False) -> None:
        self.executor.shutdown(wait=True, cancel_futures=cancel_pending)


class _DataWriter:
    """Row groups, in planned order, into `data/<split>-0000k-of-0000n.parquet`: one file open at a time.

    Each row group holds the rows of a planned group of frames (a read batch): its Parquet
    dictionary page stores each of those images once, and all of a frame's rows (one per config)
    point to it. Row groups and shards are fixed by the plan, so the bytes depend on the input alone.
    """

    def __init__(self, root: Path, queue: _WriteQueue):
        self.root, self.queue = root, queue
        self.schema = stored_arrow_schema()
        self.current: tuple[str, int] | None = None
        self.writer: ImageParquetWriter | None = None
        self.sink = None
        self.opened: list = []  # every writer and sink, for `abandon`
        self.files: list[str] = []
        # Reused file after file: every write to a sink runs in the one writer thread, a file closed before the next is written.
        self.buffers = DirectBuffers() if DIRECT_IO else None

    def open(self, split: str, shard: int, shards: int) -> ImageParquetWriter:
        """The writer of shard `shard` of `split`, opening its file (and closing the previous one) if new."""
        if self.current != (split, shard):
            self.close()
            name = f"{DATA_DIR}/{split}-{shard:05d}-of-{shards:05d}.parquet"
            (self.root / DATA_DIR).mkdir(exist_ok=True)
            self.sink = DirectFile(self.root / name, buffers=self.buffers) if DIRECT_IO else open(self.root / name, "xb")
            self.opened.append(self.sink)
            # PNG bytes are already compressed; the other columns are a few bytes a row. The image
            # dictionary page holds a whole row group's images (a page over 2 GiB is refused).
            self.writer = ImageParquetWriter(
                self.sink, self.schema, compression="NONE",
                use_dictionary=[CONFIG_COLUMN, "image.bytes", "image.path", "image_id", "stream", "paper_split"],
                dictionary_pagesize_limit=1 << 30, data_page_size=DATA_PAGE_BYTES,
            )
            self.opened.append(self.writer)
            self.current = (split, shard)
            self.files.append(name)
        return self.writer

    def write(self, table: pa.Table, images: list, indices: list[int], release: Callable[[], None]) -> None:
        """A row group into the open shard; `release` once its images are in the file."""
        self.queue.submit(self.writer.write_row_group, table, images, indices, release)

    def close(self) -> None:
        if self.writer is not None:
            self.queue.submit(self.writer.close)
            self.queue.submit(self.sink.close)
            self.writer, self.sink = None, None

    def abandon(self) -> None:
        """After a failure, once the queue is closed: release open files, writing nothing more (their folder is removed)."""
        for item in self.opened:
            if isinstance(item, ImageParquetWriter):
                item.abandon()  # no footer, also not from __del__
            else:
                item.close()


def _plan_shards(rows: int, rows_per_shard: int) -> list[int]:
    """Row index at which each shard ends; shards of equal size."""
    shards = max(1, math.ceil(rows / rows_per_shard))
    return [round(rows * (k + 1) / shards) for k in range(shards)]


def _identical_images(batch: ReadBatch, positions: Sequence[int]) -> dict[int, int]:
    """Position of each image -> position of the first identical image in the batch (itself if none).

    A Parquet dictionary holds distinct values: pyarrow's reader rebuilds it through a hash table,
    so a repeated value would shift every later index (a still probe gives identical frames). Equal
    content digests are confirmed byte for byte before two images are taken as one.
    """
    first: dict[str | None, int] = {}
    out = {}
    for position in sorted(set(positions)):
        earlier = first.setdefault(batch.digests[position], position)
        out[position] = earlier if earlier == position or batch.image(earlier) == batch.image(position) else position
    return out


def _batches(rows: Sequence[PlannedFrame], size: int) -> list[Sequence[PlannedFrame]]:
    return [rows[k : k + size] for k in range(0, len(rows), size)]


def _check_size(row: PlannedFrame, info: ImageInfo, root: Path, report: Report) -> list[str]:
    """Configs the frame still belongs to once fitted to its image's real size."""
    frame = row.frame
    if (frame.width, frame.height) == (info.width, info.height):
        return row.configs
    fit_to_image(frame, info.width, info.height, relative(frame.image_path, root), report)
    return [c for c in row.configs if c in configs_of(frame)]


@dataclass
class _RowGroup:
    split: str
    shard: int
    shards: int
    frames: Sequence[PlannedFrame]


def _row_groups(plan: dict[str, list[PlannedFrame]], frames_per_shard: int) -> list[_RowGroup]:
    """Each split's frames cut into row groups of READ_BATCH frames, and those into shards of whole row groups."""
    out = []
    for split, frames in plan.items():
        batches = _batches(frames, READ_BATCH)
        if not batches:
            continue
        shard_ends = _plan_shards(len(batches), max(1, frames_per_shard // READ_BATCH))
        for number, batch in enumerate(batches):
            out.append(_RowGroup(split, bisect.bisect_right(shard_ends, number), len(shard_ends), batch))
    return out


def write(root: Path, source: Source, plan: Mapping[str, list[PlannedFrame]], configs: set[str],
          paper: Mapping[str, Mapping[str, str]], report: Report, version: str, progress: bool, frames_per_shard: int,
          reader: ProcessImageReader | ThreadImageReader) -> BuildResult:
    """Write the planned frames of each split into `root`; `paper`: config -> image id -> paper split."""
    work = _row_groups(plan, frames_per_shard)
    frames = [row for group in work for row in group.frames]
    queue = _WriteQueue()
    writer = _DataWriter(root, queue)
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    image_bytes: Counter = Counter()  # (config, split) -> bytes of its rows' images
    digests: dict[str, str] = {}
    next_object_id = iter(range(1, 1 << 62)).__next__
    try:
        with tqdm(total=len(frames), desc="build", unit="frame", disable=not progress, mininterval=0.5) as bar:
            paths = lambda group: [str(row.frame.image_path) for row in group.frames]  # noqa: E731
            for group, batch in reader.batches(work, paths, stalled=queue.raise_if_failed):
                rows = RowGroupRows()
                for position, (row, info) in enumerate(zip(group.frames, batch.infos)):
                    frame = row.frame
                    if info is None:
                        report.add("corrupt_image", relative(frame.image_path, source.root), frame.image_id, batch.digests[position])
                        report.exclude([c for c in row.configs if c in configs], "corrupt_image")
                        continue
                    image_id = frame.image_id
                    digests[image_id] = batch.digests[position]
                    size = batch.offsets[position + 1] - batch.offsets[position]
                    kept = [(config, paper[config][image_id]) for config in _check_size(row, info, source.root, report) if config in configs]
                    rows.add_frame(position, frame, kept, next_object_id)
                    for config, _ in kept:
                        image_bytes[(config, group.split)] += size
                        if config == "bounds":
                            counts[config][group.split]["__rows__"] += 1
                            counts[config][group.split].update(b.category for b in frame.boxes)
                        else:
                            counts[config][group.split][frame.labels[config]] += 1
                shard_writer = writer.open(group.split, group.shard, group.shards)
                if rows:
                    table, stored, indices = rows.table(writer.schema, shard_writer.stand_ins, _identical_images(batch, rows.positions))
                    release = lambda batch=batch: reader.release(batch)  # noqa: E731
                    writer.write(table, [batch.image(p) for p in stored], indices, release)
                else:
                    reader.release(batch)
                bar.update(len(group.frames))
        writer.close()
        queue.drain()
    except BaseException:
        queue.close(cancel_pending=True)
        writer.abandon()
        raise
    queue.close()
    if not digests:
        raise BuildError("nothing usable: no image could be read\n" + report.format_text())
    report.totals["frames_with_rows"] = len(digests)
    fingerprint = _fingerprint(source, digests)
    result = BuildResult(root, version, {c: dict(s) for c, s in counts.items()}, report, fingerprint, len(frames), files=sorted(writer.files))
    for name in writer.files:
        split = Path(name).name.split("-")[0]
        result.file_sizes[split] = result.file_sizes.get(split, 0) + (root / name).stat().st_size
    result.bytes_written = sum(result.file_sizes.values())
    split_sizes = {
        (config, split): (sum(counts[config][split].values()) if config != "bounds" else counts[config][split]["__rows__"], image_bytes[(config, split)])
        for config in counts for split in counts[config]
    }
    (root / "README.md").write_text(render_card(result, source.layout, split_sizes), encoding="utf-8")
    report_dict = report.to_dict()
    for issue in report_dict["issues"]:
        issue["file"] = relative(issue["file"], source.root)
    (root / BUILD_MARKER).write_text(
        json.dumps({"version": version, "builder": f"fpus23 {__version__}", "source_layout": source.layout,
                    "source_fingerprint": fingerprint, "report": report_dict}, indent=2) + "\n",
        encoding="utf-8",
    )
    return result
