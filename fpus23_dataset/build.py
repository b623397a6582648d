"""Frame records -> a Hugging Face dataset folder: Parquet shards per config and split + dataset card.

Two passes. The first reads every export and every image header (size, truncation), clips boxes,
decides config membership and both split protocols. The second streams image bytes in order,
checks each PNG chunk's CRC, and appends rows to the shard writers; bytes are copied as they are,
never decoded. The build happens in a temporary folder renamed into place only when complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter, defaultdict
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
from .features import features_for
from .images import CorruptImage, ImageInfo, inspect_image
from .report import Report
from .sources import Source, configs_of, discover, read_source
from .validate import fit_to_image, relative
from .splits import paper_split, stream_split

ROWS_PER_ROW_GROUP = 100
MAX_SHARD_BYTES = 500 * 1024 * 1024
READ_THREADS = 4
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


class _ShardWriter:
    """Rows of one (config, split) into `<config>/<split>-0000k-of-0000n.parquet`, row groups of 100."""

    def __init__(self, root: Path, config: str, split: str, shard_ends: list[int]):
        self.root, self.config, self.split = root, config, split
        self.features = features_for(config)
        self.schema = self.features.arrow_schema
        self.shard_ends = shard_ends  # planned row index at which each shard ends
        self.position = 0
        self.shard = -1
        self.writer: pq.ParquetWriter | None = None
        self.buffer: dict[str, list] = defaultdict(list)
        self.files: list[str] = []
        self.rows_written = 0
        # Writes of different (config, split) run in parallel: pyarrow releases the GIL while writing.
        self.executor = ThreadPoolExecutor(1)
        self.pending = None
        self._open_next()

    def _open_next(self) -> None:
        self._close_writer()
        self.shard += 1
        name = f"{self.config}/{self.split}-{self.shard:05d}-of-{len(self.shard_ends):05d}.parquet"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # PNG bytes are already compressed; the other columns are a few bytes a row.
        self.writer = pq.ParquetWriter(
            path, self.schema, compression="NONE", use_dictionary=["stream", "paper_split"], write_statistics=False
        )
        self.files.append(name)

    def add(self, row: dict, planned_index: int) -> None:
        while self.shard < len(self.shard_ends) - 1 and planned_index >= self.shard_ends[self.shard]:
            self.flush()
            self._open_next()
        for key, value in row.items():
            self.buffer[key].append(value)
        self.rows_written += 1
        if len(self.buffer["image_id"]) >= ROWS_PER_ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        """Encode the buffered rows and hand them to this writer's thread (one row group in flight)."""
        if not self.buffer.get("image_id"):
            return
        table = pa.Table.from_pydict(dict(self.buffer), schema=self.schema)
        self.buffer = defaultdict(list)
        self._wait()
        self.pending = self.executor.submit(self.writer.write_table, table, row_group_size=ROWS_PER_ROW_GROUP)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises a failed write here

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.flush()
            self._wait()
            self.writer.close()
            self.writer = None

    def close(self) -> None:
        try:
            while self.shard < len(self.shard_ends) - 1:  # planned shards left empty by dropped frames
                self._open_next()
            self._close_writer()
        finally:
            self.executor.shutdown(wait=True)


def _plan_shards(rows: int, rows_per_shard: int) -> list[int]:
    """Row index at which each shard ends; shards of equal size."""
    shards = max(1, math.ceil(rows / rows_per_shard))
    return [round(rows * (k + 1) / shards) for k in range(shards)]


def _read_bytes(row: PlannedFrame) -> tuple[bytes | None, ImageInfo | None, str | None]:
    """The image bytes, checked (signature, every PNG chunk CRC), and their SHA-256; or the problem."""
    try:
        with open(row.frame.image_path, "rb") as fh:
            data = fh.read()
        return data, inspect_image(data, verify=True), hashlib.sha256(data).hexdigest()
    except CorruptImage as error:
        return None, None, str(error)
    except OSError as error:
        return None, None, f"cannot read: {error.strerror or error}"


def _check_size(row: PlannedFrame, info: ImageInfo, file: str, report: Report) -> list[str]:
    """Configs the frame still belongs to once fitted to its image's real size."""
    frame = row.frame
    if (frame.width, frame.height) == (info.width, info.height):
        return row.configs
    fit_to_image(frame, info.width, info.height, file, report)
    return [c for c in row.configs if c in configs_of(frame)]


def _row_dict(frame: Frame, config: str, data: bytes, paper: str, next_object_id: Callable[[], int]) -> dict:
    probe = frame.labels.get("probe")
    out = {
        "image": {"bytes": data, "path": f"{frame.stream}/{frame.name}"},
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


def build(
    source_path: Path | str | None,
    out: Path | str,
    version: str,
    *,
    seed: int = 0,
    progress: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> BuildResult:
    """Build the dataset folder `out` from a source (None: the embedded synthetic default)."""
    _check_version(version)
    out = Path(out).absolute()
    if out.exists() and not (out / BUILD_MARKER).is_file() and any(out.iterdir()):
        raise BuildError(f"{out}: exists and is not an fpus23 build (no {BUILD_MARKER}); refusing to replace it")
    if source_path is None:
        from .synth import render_procedural

        with tempfile.TemporaryDirectory(prefix="fpus23-default-") as rendered:
            render_procedural(rendered, seed=seed, progress=progress)
            return build(rendered, out, version, seed=seed, progress=progress, max_shard_bytes=max_shard_bytes)

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
        for row in members[config]:
            plan[(config, groups[row.frame.split_group])].append(row)

    temporary = sibling_temp_dir(out)
    try:
        result = _write(temporary, source, rows, plan, paper, report, version, progress, max_shard_bytes)
        _replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    result.out = out
    return result


def _write(root, source, rows, plan, paper, report, version, progress, max_shard_bytes) -> BuildResult:
    rows_per_shard = _rows_per_shard(rows, max_shard_bytes)
    writers: dict[tuple[str, str], _ShardWriter] = {}
    planned_index: dict[tuple[str, str], dict[str, int]] = {}
    for key, members in sorted(plan.items()):
        writers[key] = _ShardWriter(root, key[0], key[1], _plan_shards(len(members), rows_per_shard))
        planned_index[key] = {r.frame.image_id: i for i, r in enumerate(members)}
    split_of = {(key[0], r.frame.image_id): key[1] for key, members in plan.items() for r in members}
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    digests: dict[str, str] = {}
    object_ids = iter(range(1, 1 << 62))
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            # Bounded read-ahead: at most a few hundred images in memory at once.
            for row, (data, info, digest) in tqdm(
                zip(rows, _bounded_map(pool, _read_bytes, rows, 256)), total=len(rows), desc="build", unit="frame",
                disable=not progress, mininterval=0.5,
            ):
                frame = row.frame
                file = relative(frame.image_path, source.root)
                if data is None:
                    report.add("corrupt_image", file, frame.image_id, digest)
                    report.exclude(row.configs, "corrupt_image")
                    continue
                configs = _check_size(row, info, file, report)
                digests[frame.image_id] = digest
                for config in configs:
                    split = split_of[(config, frame.image_id)]
                    record = _row_dict(frame, config, data, paper[config][frame.image_id], lambda: next(object_ids))
                    writers[(config, split)].add(record, planned_index[(config, split)][frame.image_id])
                    if config == "bounds":
                        counts[config][split]["__rows__"] += 1
                        counts[config][split].update(b.category for b in frame.boxes)
                    else:
                        counts[config][split][frame.labels[config]] += 1
    except BaseException:
        for writer in writers.values():
            writer.executor.shutdown(wait=True, cancel_futures=True)
        raise
    if not digests:
        raise BuildError("nothing usable: no image could be read\n" + report.format_text())
    files = []
    for writer in writers.values():
        writer.close()
        files.extend(writer.files)
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
