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
import re
import shutil
import tempfile
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

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
from .sources import IMAGE_SUFFIXES, Source, configs_of, discover, iter_source
from .validate import fit_to_image, relative
from .splits import PaperSplit, stream_split

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


def _mean_image_bytes(paths: Iterable[Path | str], sample: int = 256) -> float:
    """The mean file size of up to `sample` of `paths` spread over them (1 if none can be read)."""
    paths = list(paths)
    sizes = []
    for path in paths[:: max(1, len(paths) // sample)]:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            continue
    return max(1.0, sum(sizes) / len(sizes)) if sizes else 1.0


def _sample_images(source: Source, per_folder: int = 8) -> Iterator[str]:
    """A few image files of each image folder of a source (and of the folders below its plane folders)."""
    folders = [d for name in sorted(source.streams) for d in source.streams[name].image_dirs]
    folders += [p for folder in source.plane_folders.values() for p in (folder, *sorted(folder.glob("*/")))]
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                found = 0
                for entry in entries:
                    if found < per_folder and entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                        found += 1
                        yield entry.path
        except OSError:
            continue


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
    """Row groups, in planned order, into `data/<group>-0000k-of-0000n.parquet`: one file open at a time.

    Each row group holds the rows of a planned batch of frames of one split group (a stream): its
    Parquet dictionary page stores each of those images once, and all of a frame's rows (one per
    config) point to it. Row groups and shards are fixed by the plan, so the bytes depend on the
    input alone. Once the stream split is chosen, `place` moves each group's files into
    `data/<split>/`.
    """

    def __init__(self, root: Path, queue: _WriteQueue):
        self.root, self.queue = root, queue
        self.schema = stored_arrow_schema()
        self.current: tuple[str, int] | None = None
        self.writer: ImageParquetWriter | None = None
        self.sink = None
        self.opened: list = []  # every writer and sink, for `abandon`
        self.files: dict[str, list[str]] = {}  # group -> its files, as written
        self.stems: dict[str, str] = {}  # group -> its files' name stem
        # Shared file after file: every write to a sink runs in the one writer thread, a file closed before the next is written.
        self.buffers = DirectBuffers() if DIRECT_IO else None

    def open(self, group: str, shard: int, shards: int) -> ImageParquetWriter:
        """The writer of shard `shard` of `group`, opening its file (and closing the previous one) if new."""
        if self.current != (group, shard):
            self.close()
            stem = self.stems.setdefault(group, _file_stem(group, set(self.stems.values())))
            name = f"{DATA_DIR}/{stem}-{shard:05d}-of-{shards:05d}.parquet"
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
            self.current = (group, shard)
            self.files.setdefault(group, []).append(name)
        return self.writer

    def write(self, table: pa.Table, images: list, indices: list[int], release: Callable[[], None]) -> None:
        """A row group into the open shard; `release` once its images are in the file."""
        self.queue.submit(self.writer.write_row_group, table, images, indices, release)

    def close(self) -> None:
        if self.writer is not None:
            self.queue.submit(self.writer.close)
            self.queue.submit(self.sink.close)
            self.writer, self.sink = None, None

    def place(self, split_of: Mapping[str, str]) -> dict[str, list[str]]:
        """Once every file is closed: each group's files moved into `data/<split>/`; split -> its files."""
        placed: dict[str, list[str]] = {}
        for group, names in self.files.items():
            split = split_of[group]
            (self.root / DATA_DIR / split).mkdir(exist_ok=True)
            for name in names:
                final = f"{DATA_DIR}/{split}/{Path(name).name}"
                os.rename(self.root / name, self.root / final)
                placed.setdefault(split, []).append(final)
        return {split: sorted(placed[split]) for split in schema.SPLITS if split in placed}

    def finish(self) -> None:
        """Once the queue is drained: wait until every file is on disk (a failed write is raised here)."""
        if self.buffers is not None:
            self.buffers.finish()
            self.buffers.close()

    def abandon(self) -> None:
        """After a failure, once the queue is closed: release open files, writing nothing more (their folder is removed)."""
        for item in self.opened:
            if isinstance(item, ImageParquetWriter):
                item.abandon()  # no footer, also not from __del__
            else:
                item.close()
        if self.buffers is not None:
            self.buffers.close()


def _file_stem(group: str, taken: set[str]) -> str:
    """A file name stem for a split group: its name, with characters that are unsafe in a file name or
    a glob replaced (a plane folder's blocks of frames are `AC_PLANE#3`), unique in the build."""
    stem = re.sub(r"[^A-Za-z0-9._+=@-]", "_", group).lstrip(".") or "group"
    candidate, k = stem, 1
    while candidate in taken:
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


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
    mean_image_bytes = _mean_image_bytes(_sample_images(source))
    # Forked first, while this process runs no other thread; it readies its memory while the first export is parsed.
    reader = open_image_reader(int(2 * READ_BATCH * mean_image_bytes), expected_batch_bytes=int(READ_BATCH * mean_image_bytes),
                               use_process=READ_IN_PROCESS)
    temporary = sibling_temp_dir(out)
    try:
        try:
            result = _write(temporary, source, source_path, reader, version, seed, progress, max_shard_bytes, set(configs))
        finally:
            reader.close()
        _replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    result.out = out
    return result


@dataclass
class _RowGroup:
    group: str  # the split group (stream) its frames belong to
    shard: int
    shards: int
    frames: Sequence[PlannedFrame]


class _Planner:
    """Plans each split group as it comes from the source: boxes fitted to the stated image size,
    configs, paper splits, and the group's row groups of READ_BATCH frames cut into shards."""

    def __init__(self, source: Source, report: Report, configs: set[str], seed: int, max_shard_bytes: int):
        self.source, self.report, self.configs, self.max_shard_bytes, self.seed = source, report, configs, max_shard_bytes, seed
        self.rows: list[PlannedFrame] = []  # every planned frame, for the stream split
        self.split_of: dict[str, str] = {}  # split group -> split, once all are planned
        self.paper = PaperSplit(seed)
        self.paper_of: dict[str, dict[str, str]] = {config: {} for config in schema.CONFIGS}  # config -> image id -> split

    def row_groups(self, groups: Iterable[list[Frame]]) -> Iterator[_RowGroup]:
        """The row groups of each group in turn; once the last group is planned, `split_of` is set:
        the stream split is chosen while the last row groups are still being read and written."""
        for frames in groups:
            rows = _plan_frames(frames, self.source, self.report)
            if not rows:
                continue
            self.rows.extend(rows)
            group = rows[0].frame.split_group
            for config in schema.CONFIGS:  # all configs, so that a build of some gives the same paper splits
                ids = [row.frame.image_id for row in rows if config in row.configs]
                if ids:
                    self.paper_of[config].update(self.paper.assign(config, group, ids))
            batches = _batches([row for row in rows if not self.configs.isdisjoint(row.configs)], READ_BATCH)
            if not batches:
                continue
            frames_per_shard = self.max_shard_bytes // _mean_image_bytes([row.frame.image_path for row in rows], sample=32)
            shard_ends = _plan_shards(len(batches), max(1, int(frames_per_shard) // READ_BATCH))
            for number, batch in enumerate(batches):
                yield _RowGroup(group, bisect.bisect_right(shard_ends, number), len(shard_ends), batch)
        if self.rows:
            self.split_of = stream_split([row.frame for row in self.rows], self.seed)


def _write(root: Path, source: Source, source_path, reader, version: str, seed: int, progress: bool, max_shard_bytes: int,
           configs: set[str]) -> BuildResult:
    """Each split group written while the next is parsed; the stream split, chosen once all are, only
    decides which folder each group's files go to."""
    report = Report()
    planner = _Planner(source, report, configs, seed, max_shard_bytes)
    queue = _WriteQueue()
    writer = _DataWriter(root, queue)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (config, group) -> class -> rows (bounds: boxes, "__rows__")
    image_bytes: Counter = Counter()  # (config, group) -> bytes of its rows' images
    digests: dict[str, str] = {}
    frames_read = 0
    next_object_id = iter(range(1, 1 << 62)).__next__
    groups = iter_source(source, report)
    try:
        with tqdm(desc="build", unit="frame", disable=not progress, mininterval=0.5) as bar:
            work = planner.row_groups(groups)
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
                        rows.add(position, frame, config, planner.paper_of[config][frame.image_id], next_object_id)
                        image_bytes[(config, group.group)] += size
                        if config == "bounds":
                            counts[(config, group.group)]["__rows__"] += 1
                            counts[(config, group.group)].update(b.category for b in frame.boxes)
                        else:
                            counts[(config, group.group)][frame.labels[config]] += 1
                shard_writer = writer.open(group.group, group.shard, group.shards)
                if rows:
                    table, stored, indices = rows.table(writer.schema, shard_writer.stand_ins, _identical_images(batch, rows.positions))
                    release = lambda batch=batch: reader.release(batch)  # noqa: E731
                    writer.write(table, [batch.image(p) for p in stored], indices, release)
                else:
                    reader.release(batch)
                frames_read += len(group.frames)
                bar.update(len(group.frames))
        if not planner.rows:
            raise BuildError(f"{source_path}: nothing usable (no frame with an image and a label)\n" + report.format_text())
        split_of = planner.split_of
        writer.close()
        queue.drain()
        writer.finish()
    except BaseException:
        queue.close(cancel_pending=True)
        writer.abandon()
        raise
    finally:
        groups.close()
    queue.close()
    if not digests:
        raise BuildError("nothing usable: no image could be read\n" + report.format_text())
    for config in set(report.excluded) - configs:
        del report.excluded[config]
    report.totals["frames_with_rows"] = len(digests)
    files = writer.place(split_of)
    per_split: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    split_bytes: Counter = Counter()
    for (config, group), counter in counts.items():
        per_split[config][split_of[group]].update(counter)
        split_bytes[(config, split_of[group])] += image_bytes[(config, group)]
    fingerprint = _fingerprint(source, digests)
    result = BuildResult(root, version, {c: dict(s) for c, s in per_split.items()}, report, fingerprint, frames_read,
                         files=sorted(name for names in files.values() for name in names))
    for split, names in files.items():
        result.file_sizes[split] = sum((root / name).stat().st_size for name in names)
    result.bytes_written = sum(result.file_sizes.values())
    split_sizes = {
        (config, split): (counter["__rows__"] if config == "bounds" else sum(counter.values()), split_bytes[(config, split)])
        for config, by_split in per_split.items() for split, counter in by_split.items()
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
