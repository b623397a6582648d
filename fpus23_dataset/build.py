"""Frame records -> a Hugging Face dataset folder: Parquet shards per config and split + dataset card.

Two passes. The first reads every export, clips boxes to the size each export states, and decides
config membership and both split protocols. The second streams image bytes in order, in batches read
straight into one Arrow buffer, checks each PNG chunk's CRC there, and appends rows to the shard
writers: a config's rows point into that buffer (a slice where its frames are consecutive), so the
bytes are copied only into the Parquet files, never decoded. Each config holds its own copy of its
images, so that every config loads alone (see the README for the measured cost). The build happens in
a temporary folder renamed into place only when complete.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import shutil
import tempfile
from array import array
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from . import __version__, schema
from .atomic import sibling_temp_dir
from .card import render_card
from .cvat import Frame
from .features import IMAGE_ARROW_TYPE, arrow_schema
from .images import CorruptImage, ImageInfo, inspect_image
from .report import Report
from .sources import Source, configs_of, discover, read_source
from .validate import fit_to_image, relative
from .splits import paper_split, stream_split

ROWS_PER_ROW_GROUP = 100
DATA_PAGE_BYTES = 1 << 20
MAX_SHARD_BYTES = 500 * 1024 * 1024
READ_BATCH = 64  # frames per read task: one Arrow buffer, few thread hand-offs
READ_THREADS = 2
READ_AHEAD = 4  # read tasks in flight: at most ~4 x 64 images in memory
WRITE_THREADS = 2
MAX_IMAGE_BYTES = 16 << 20  # bounds a batch's buffer (and its int32 offsets); FPUS23 frames are ~0.1 MB
WRITES_IN_FLIGHT = 8  # per write thread
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


def _rows_per_shard(rows: Sequence[PlannedFrame], max_bytes: int) -> int:
    """Shards are cut by row count, from the mean size of a sample of the images."""
    if not rows:
        return 1
    step = max(1, len(rows) // 256)
    sizes = []
    for row in rows[::step]:
        try:
            sizes.append(os.stat(row.frame.image_path).st_size)
        except OSError:
            continue
    mean = sum(sizes) / len(sizes) if sizes else 1
    return max(1, int(max_bytes // max(mean, 1)))


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


def _fingerprint(source: Source, rows: Sequence[PlannedFrame], image_digests: dict[str, str]) -> str:
    digest = hashlib.sha256()
    xmls = sorted(xml for s in source.streams.values() for xml in s.xml_files)
    for xml in xmls:
        digest.update(f"xml {relative(xml, source.root)} {hashlib.sha256(xml.read_bytes()).hexdigest()}\n".encode())
    for row in rows:
        if row.frame.image_id in image_digests:
            digest.update(f"image {row.frame.image_id} {image_digests[row.frame.image_id]}\n".encode())
    return digest.hexdigest()


class _WriteQueue:
    """One writer thread: the writes of a shard file run in order; a bounded number wait at once.

    pyarrow releases the GIL while it encodes and writes, so two queues keep both cores busy while
    the main thread prepares the next batch.
    """

    def __init__(self, in_flight: int = WRITES_IN_FLIGHT):
        self.executor = ThreadPoolExecutor(1)
        self.pending: deque = deque()
        self.in_flight = in_flight

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        self.pending.append(self.executor.submit(fn, *args, **kwargs))
        while len(self.pending) > self.in_flight:
            self.pending.popleft().result()  # re-raises a failed write here

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self, cancel_pending: bool = False) -> None:
        self.executor.shutdown(wait=True, cancel_futures=cancel_pending)


class _ShardWriter:
    """Rows of one (config, split) into `<config>/<split>-0000k-of-0000n.parquet`, row groups of 100.

    Shards end at planned row indices, so a dropped frame never moves a later frame to another shard.
    """

    def __init__(self, root: Path, config: str, split: str, shard_ends: list[int], queue: _WriteQueue):
        self.root, self.config, self.split = root, config, split
        self.schema = arrow_schema(config)
        self.shard_ends = shard_ends
        self.queue = queue
        self.shard = -1
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.files: list[str] = []
        self.rows_written = 0
        self._open_next()

    def _open_next(self) -> None:
        self._close_writer()
        self.shard += 1
        name = f"{self.config}/{self.split}-{self.shard:05d}-of-{len(self.shard_ends):05d}.parquet"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # PNG bytes are already compressed; the other columns are a few bytes a row.
        # write_batch_size=1: a page ends at the first value that fills it, wherever the read batches
        # cut the rows into chunks, so the bytes depend on the rows alone.
        self.writer = pq.ParquetWriter(
            path, self.schema, compression="NONE", use_dictionary=["stream", "paper_split"], write_statistics=False,
            data_page_size=DATA_PAGE_BYTES, write_batch_size=1,
        )
        self.files.append(name)

    def append(self, table: pa.Table, planned: Sequence[int]) -> None:
        """Rows in planned order; `planned` gives each row's planned index within this (config, split)."""
        last, start = len(self.shard_ends) - 1, 0
        while start < len(planned):
            while self.shard < last and planned[start] >= self.shard_ends[self.shard]:
                self._open_next()
            stop = len(planned) if self.shard == last else bisect.bisect_left(planned, self.shard_ends[self.shard], lo=start)
            self.pending.append(table.slice(start, stop - start))
            self.pending_rows += stop - start
            self.rows_written += stop - start
            start = stop
            if self.pending_rows >= ROWS_PER_ROW_GROUP:
                self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool) -> None:
        if not self.pending_rows:
            return
        table = pa.concat_tables(self.pending)  # zero-copy: chunks of the batches' arrays
        rows = table.num_rows - table.num_rows % ROWS_PER_ROW_GROUP if whole_groups_only else table.num_rows
        if rows:
            self.queue.submit(self.writer.write_table, table.slice(0, rows), row_group_size=ROWS_PER_ROW_GROUP)
        rest = table.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def _close_writer(self) -> None:
        if self.writer is not None:
            self._flush(whole_groups_only=False)
            self.queue.submit(self.writer.close)
            self.writer = None

    def close(self) -> None:
        while self.shard < len(self.shard_ends) - 1:  # planned shards left empty by dropped frames
            self._open_next()
        self._close_writer()


def _plan_shards(rows: int, rows_per_shard: int) -> list[int]:
    """Row index at which each shard ends; shards of equal size."""
    shards = max(1, math.ceil(rows / rows_per_shard))
    return [round(rows * (k + 1) / shards) for k in range(shards)]


@dataclass
class _ReadBatch:
    """Images of consecutive frames read into one Arrow buffer, each checked where it lies."""

    buffer: pa.Buffer
    offsets: array  # int32, len(frames) + 1; an unreadable frame takes no bytes
    infos: list[ImageInfo | None]
    digests: list[str | None]  # SHA-256 of the bytes, or the problem when info is None

    def images(self) -> pa.Array:
        return pa.Array.from_buffers(pa.binary(), len(self.infos), [None, pa.py_buffer(self.offsets), self.buffer])


def _read_batch(rows: Sequence[PlannedFrame]) -> _ReadBatch:
    """Read a batch of frames; the bytes stay as they are and are never decoded."""
    sizes = []
    for row in rows:
        try:
            sizes.append(os.stat(row.frame.image_path).st_size)
        except OSError:
            sizes.append(0)  # reported when it is opened below
    buffer = pa.allocate_buffer(sum(size for size in sizes if size <= MAX_IMAGE_BYTES))
    view = memoryview(buffer).cast("B")  # Arrow exports signed bytes; compare as unsigned
    offsets = array("i", [0])
    infos: list[ImageInfo | None] = []
    digests: list[str | None] = []
    for row, size in zip(rows, sizes):
        start = offsets[-1]
        try:
            if size > MAX_IMAGE_BYTES:
                raise CorruptImage(f"file is over {MAX_IMAGE_BYTES >> 20} MB, far larger than any ultrasound frame")
            with open(row.frame.image_path, "rb") as fh:
                got = fh.readinto(view[start : start + size])
                if got != size or fh.read(1):
                    raise CorruptImage("file changed while it was being read")
            data = view[start : start + size]
            infos.append(inspect_image(data, verify=True))
            digests.append(hashlib.sha256(data).hexdigest())
            offsets.append(start + size)
        except CorruptImage as error:
            infos.append(None)
            digests.append(str(error))
            offsets.append(start)
        except OSError as error:
            infos.append(None)
            digests.append(f"cannot read: {error.strerror or error}")
            offsets.append(start)
    return _ReadBatch(buffer, offsets, infos, digests)


def _batches(rows: Sequence[PlannedFrame], size: int) -> list[Sequence[PlannedFrame]]:
    return [rows[k : k + size] for k in range(0, len(rows), size)]


def _check_size(row: PlannedFrame, info: ImageInfo, root: Path, report: Report) -> list[str]:
    """Configs the frame still belongs to once fitted to its image's real size."""
    frame = row.frame
    if (frame.width, frame.height) == (info.width, info.height):
        return row.configs
    fit_to_image(frame, info.width, info.height, relative(frame.image_path, root), report)
    return [c for c in row.configs if c in configs_of(frame)]


def _row_values(frame: Frame, config: str, paper: str, next_object_id: Callable[[], int]) -> dict:
    """A row's columns other than the image."""
    probe = frame.labels.get("probe")
    out = {
        "image_id": frame.image_id,
        "stream": frame.stream,
        "frame": frame.index,
        "probe": schema.PROBE.classes.index(probe) if probe is not None else None,
        "width": frame.width,
        "height": frame.height,
        "paper_split": paper,
    }
    if config == "bounds":
        out["objects"] = [
            {
                "id": next_object_id(),
                "bbox": [round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2)],
                "category": schema.BOX_CATEGORIES.index(b.category),
                "area": round(b.area, 2),
            }
            for b in frame.boxes
        ]
    else:
        out["label"] = schema.class_names(config).index(frame.labels[config])
    return out


def _table(schema_: pa.Schema, images: pa.Array, members: list[tuple[int, str, dict]]) -> pa.Table:
    """One (config, split)'s rows of a batch.

    A long contiguous run is a zero-copy slice of the batch's buffer; anything else is copied out, so
    that rows waiting for their row group never pin more than a few whole batch buffers (memory stays
    bounded however sparsely a config's frames are spread).
    """
    indices = [index for index, _, _ in members]
    if len(indices) >= READ_BATCH // 2 and indices == list(range(indices[0], indices[0] + len(indices))):
        image_bytes = images.slice(indices[0], len(indices))
    else:
        image_bytes = images.take(pa.array(indices, pa.int32()))
    columns = [pa.StructArray.from_arrays([image_bytes, pa.array([path for _, path, _ in members], pa.string())], fields=list(IMAGE_ARROW_TYPE))]
    for column in list(schema_)[1:]:
        columns.append(pa.array([values[column.name] for _, _, values in members], type=column.type))
    return pa.Table.from_arrays(columns, schema=schema_)


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

    source = discover(source_path)
    report = Report()
    rows = _plan_frames(read_source(source, report), source, report)
    if not rows:
        raise BuildError(f"{source_path}: nothing usable (no frame with an image and a label)\n" + report.format_text())

    groups = stream_split([r.frame for r in rows], seed)
    members: dict[str, list[PlannedFrame]] = {config: [] for config in schema.CONFIGS}
    for row in rows:
        for config in row.configs:
            members[config].append(row)
    paper = {config: paper_split([r.frame.image_id for r in members[config]], config, seed) for config in schema.CONFIGS}
    # (config, split) -> rows in order; order within a split is (stream, frame, name)
    plan: dict[tuple[str, str], list[PlannedFrame]] = defaultdict(list)
    for config in schema.CONFIGS:
        if config in configs:
            for row in members[config]:
                plan[(config, groups[row.frame.split_group])].append(row)
    rows_per_shard = _rows_per_shard(rows, max_shard_bytes)
    wanted = [row for row in rows if any(config in configs for config in row.configs)]
    for config in set(report.excluded) - set(configs):
        del report.excluded[config]

    temporary = sibling_temp_dir(out)
    try:
        result = _write(temporary, source, wanted, plan, paper, report, version, progress, rows_per_shard)
        _replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    result.out = out
    return result


def _write(root, source, rows, plan, paper, report, version, progress, rows_per_shard) -> BuildResult:
    queues = [_WriteQueue() for _ in range(WRITE_THREADS)]
    writers: dict[tuple[str, str], _ShardWriter] = {}
    planned_index: dict[tuple[str, str], dict[str, int]] = {}
    for number, (key, members) in enumerate(sorted(plan.items())):
        writers[key] = _ShardWriter(root, key[0], key[1], _plan_shards(len(members), rows_per_shard), queues[number % len(queues)])
        planned_index[key] = {r.frame.image_id: i for i, r in enumerate(members)}
    split_of = {(key[0], r.frame.image_id): key[1] for key, members in plan.items() for r in members}
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    digests: dict[str, str] = {}
    object_ids = iter(range(1, 1 << 62))
    batches = _batches(rows, READ_BATCH)
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool, tqdm(
            total=len(rows), desc="build", unit="frame", disable=not progress, mininterval=0.5
        ) as bar:
            # Bounded read-ahead: a few batches of images in memory at once.
            for batch_rows, batch in zip(batches, _bounded_map(pool, _read_batch, batches, READ_AHEAD)):
                groups: dict[tuple[str, str], list[tuple[int, str, dict]]] = defaultdict(list)
                for position, (row, info) in enumerate(zip(batch_rows, batch.infos)):
                    frame = row.frame
                    if info is None:
                        report.add("corrupt_image", relative(frame.image_path, source.root), frame.image_id, batch.digests[position])
                        report.exclude([c for c in row.configs if (c, frame.image_id) in split_of], "corrupt_image")
                        continue
                    digests[frame.image_id] = batch.digests[position]
                    for config in _check_size(row, info, source.root, report):
                        split = split_of.get((config, frame.image_id))
                        if split is None:  # a config not being built
                            continue
                        values = _row_values(frame, config, paper[config][frame.image_id], lambda: next(object_ids))
                        groups[(config, split)].append((position, f"{frame.stream}/{frame.name}", values))
                        if config == "bounds":
                            counts[config][split]["__rows__"] += 1
                            counts[config][split].update(b.category for b in frame.boxes)
                        else:
                            counts[config][split][frame.labels[config]] += 1
                images = batch.images()
                for key, members in groups.items():
                    writer = writers[key]
                    index = planned_index[key]
                    writer.append(_table(writer.schema, images, members), [index[v["image_id"]] for _, _, v in members])
                bar.update(len(batch_rows))
        for writer in writers.values():
            writer.close()
        for queue in queues:
            queue.drain()
    except BaseException:
        for queue in queues:
            queue.close(cancel_pending=True)
        raise
    for queue in queues:
        queue.close()
    if not digests:
        raise BuildError("nothing usable: no image could be read\n" + report.format_text())
    files = [name for writer in writers.values() for name in writer.files]
    report.totals["frames_with_rows"] = len(digests)
    fingerprint = _fingerprint(source, rows, digests)
    result = BuildResult(root, version, {c: dict(s) for c, s in counts.items()}, report, fingerprint, len(rows), files=sorted(files))
    result.bytes_written = sum((root / f).stat().st_size for f in files)
    split_sizes = {
        (config, split): (writers[(config, split)].rows_written, sum((root / f).stat().st_size for f in writers[(config, split)].files))
        for config, split in writers
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


def _bounded_map(pool: ThreadPoolExecutor, fn, items: Sequence, ahead: int) -> Iterator:
    futures = []
    iterator = iter(items)
    for item in iterator:
        futures.append(pool.submit(fn, item))
        if len(futures) >= ahead:
            break
    position = 0
    for item in iterator:
        yield futures[position].result()
        futures[position] = None
        position += 1
        futures.append(pool.submit(fn, item))
    for future in futures[position:]:
        yield future.result()


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
