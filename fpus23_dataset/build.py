"""Frame records -> a Hugging Face dataset folder: one shared Parquet table per split + dataset card.

Two passes. The first reads every export, clips boxes to the size each export states, and decides
config membership and both split protocols. The second streams image bytes split by split, in batches
of READ_BATCH frames that `image_reader` reads and checks (each PNG chunk's CRC) in a child process,
and writes each batch as one row group: a row per frame and config, the image column a Parquet
dictionary, so each image is stored once and all rows of its frame point to it. The images go from
the read buffer into the file (see `parquet_images`), never decoded. The build happens in a temporary
folder renamed into place only when complete.
"""
from __future__ import annotations

import bisect
import gc
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa

from . import __version__, schema
from .atomic import sibling_temp_dir
from .card import render_card
from .cvat import Frame
from .features import CONFIG_COLUMN, DATA_DIR, stored_arrow_schema
from .direct_io import DirectBuffers, DirectFile
from .image_reader import ReadBatch, open_image_reader
from .images import ImageInfo
from .parquet_images import ImageParquetWriter
from .progress import tqdm
from .report import Report
from .row_group import RowGroupRows
from .sources import Source, configs_of, discover, read_source
from .validate import fit_to_image, relative
from .splits import paper_split, stream_split

DATA_PAGE_BYTES = 1 << 20
MAX_SHARD_BYTES = 500 * 1024 * 1024
READ_BATCH = 256  # frames per read batch and per row group: one read buffer, each image stored once
READ_IN_PROCESS = True  # read and check images in a forked child process where that is safe (see image_reader)
WRITES_IN_FLIGHT = 4  # row groups queued for the writer thread
DIRECT_IO = True  # Parquet files written with O_DIRECT (see direct_io); False: through the page cache
BUILD_MARKER = "build_report.json"


class BuildError(RuntimeError):
    pass


@dataclass
class PlannedFrame:
    frame: Frame
    configs: list[str]


def _plan_frames(frames: Sequence[Frame], source: Source, report: Report) -> list[PlannedFrame]:
    """Clip boxes to the size the export states (the image's own size is checked when it is read)."""
    out = []
    for frame in frames:
        if frame.boxes and frame.width and frame.height:
            fit_to_image(frame, frame.width, frame.height, relative(frame.image_path, source.root), report)
        configs = configs_of(frame)
        if configs:
            out.append(PlannedFrame(frame, configs))
    return out


def _mean_image_bytes(frames: Sequence[Frame]) -> float:
    """The mean file size of a sample of the images: shards are cut by frame count, read slots sized by it."""
    step = max(1, len(frames) // 256)
    sizes = []
    for frame in frames[::step]:
        try:
            sizes.append(os.stat(frame.image_path).st_size)
        except OSError:
            continue
    return max(1.0, sum(sizes) / len(sizes)) if sizes else 1.0


@dataclass
class BuildResult:
    out: Path
    version: str
    counts: dict[str, dict[str, Counter]]  # config -> split -> class -> rows
    report: Report
    fingerprint: str
    frames_read: int
    bytes_written: int = 0
    files: list[str] = field(default_factory=list)
    file_sizes: dict[str, int] = field(default_factory=dict)  # split -> bytes of its data files

    def class_counts(self) -> dict[str, dict[str, Counter]]:
        """The counts in `tables.class_counts` form (bounds: boxes per class and '(frames)')."""
        out: dict[str, dict[str, Counter]] = {}
        for config in schema.CONFIGS:
            per_split = self.counts.get(config)
            if not per_split:
                continue
            out[config] = {}
            for split in schema.SPLITS:
                if split in per_split:
                    counter = Counter(per_split[split])
                    if config == "bounds":
                        counter["(frames)"] = counter.pop("__rows__", 0)
                    out[config][split] = counter
        return out


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


def build(
    source_path: Path | str | None,
    out: Path | str,
    version: str,
    *,
    seed: int = 0,
    progress: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    configs: Sequence[str] = schema.CONFIGS,
) -> BuildResult:
    """Build the dataset folder `out` from a source (None: the embedded synthetic default).

    `configs` picks which configs to write; splits, shards and object ids are those of the full build,
    so each config's files are byte-identical to the same config's files in a full build. The source
    fingerprint covers the exports and the images read, so it is the full build's only for all configs.
    """
    _check_version(version)
    unknown = sorted(set(configs) - set(schema.CONFIGS))
    if unknown or not configs:
        raise BuildError(f"configs {unknown or list(configs)}: choose among {', '.join(schema.CONFIGS)}")
    out = Path(out).absolute()
    if out.exists() and not (out / BUILD_MARKER).is_file() and any(out.iterdir()):
        raise BuildError(f"{out}: exists and is not an fpus23 build (no {BUILD_MARKER}); refusing to replace it")
    if source_path is None:
        from .synth import render_procedural

        with tempfile.TemporaryDirectory(prefix="fpus23-default-") as rendered:
            render_procedural(rendered, seed=seed, progress=progress)
            return build(rendered, out, version, seed=seed, progress=progress, max_shard_bytes=max_shard_bytes, configs=configs)

    with _without_cyclic_gc():
        return _build(source_path, out, version, seed, progress, max_shard_bytes, configs)


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """The build makes a few hundred thousand long-lived objects (frames, boxes, rows) and no cycles;
    the cyclic collector, triggered by the allocations, kept re-scanning them: a tenth of the build."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(source_path, out: Path, version: str, seed: int, progress: bool, max_shard_bytes: int,
           configs: Sequence[str]) -> BuildResult:
    source = discover(source_path)
    report = Report()
    frames = read_source(source, report)
    mean_image_bytes = _mean_image_bytes(frames)
    # Started now, so the reader process readies its memory while this one plans and splits.
    reader = open_image_reader(int(2 * READ_BATCH * mean_image_bytes), expected_batch_bytes=int(READ_BATCH * mean_image_bytes),
                               use_process=READ_IN_PROCESS)
    try:
        return _plan_and_write(source, source_path, frames, out, version, seed, progress, max_shard_bytes, configs, report,
                               reader, mean_image_bytes)
    finally:
        reader.close()


def _plan_and_write(source, source_path, frames, out, version, seed, progress, max_shard_bytes, configs, report, reader,
                    mean_image_bytes) -> BuildResult:
    rows = _plan_frames(frames, source, report)
    if not rows:
        raise BuildError(f"{source_path}: nothing usable (no frame with an image and a label)\n" + report.format_text())

    groups = stream_split([r.frame for r in rows], seed)
    members: dict[str, list[str]] = {config: [] for config in schema.CONFIGS}
    for row in rows:
        for config in row.configs:
            members[config].append(row.frame.image_id)
    paper = {config: paper_split(members[config], config, seed) for config in schema.CONFIGS}
    # split -> frames in order (stream, frame, name); each frame once, with all its configs' rows
    plan: dict[str, list[PlannedFrame]] = {split: [] for split in schema.SPLITS}
    for row in rows:
        if any(config in configs for config in row.configs):
            plan[groups[row.frame.split_group]].append(row)
    frames_per_shard = max(1, int(max_shard_bytes // mean_image_bytes))
    for config in set(report.excluded) - set(configs):
        del report.excluded[config]

    temporary = sibling_temp_dir(out)
    try:
        result = _write(temporary, source, plan, set(configs), paper, report, version, progress, frames_per_shard, reader)
        _replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    result.out = out
    return result


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


def _write(root, source, plan, configs, paper, report, version, progress, frames_per_shard, reader) -> BuildResult:
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
                    digests[frame.image_id] = batch.digests[position]
                    size = batch.offsets[position + 1] - batch.offsets[position]
                    for config in _check_size(row, info, source.root, report):
                        if config not in configs:
                            continue
                        rows.add(position, frame, config, paper[config][frame.image_id], next_object_id)
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


def _replace(temporary: Path, out: Path) -> None:
    """Put the finished build in place; an earlier build stays intact until the new one is complete."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(temporary, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_version(version: str) -> None:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BuildError(f"version {version!r}: expected X.Y.Z (semantic version, digits only)")
