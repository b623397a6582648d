"""Frame records -> a Hugging Face dataset folder: one shared Parquet table per split + dataset card.

Two passes. The first reads every export (in worker processes where that pays), clips boxes to the
size each export states, and decides config membership and both split protocols. The second
(`writing`) streams the image bytes into Parquet row groups, split by split. The build happens in a
temporary folder renamed into place only when complete.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from . import schema
from .atomic import sibling_temp_dir
from .cvat import Frame
from .image_reader import open_image_reader
from .report import Report
from .sources import Source, configs_of, discover, iter_source
from .validate import fit_to_image, relative

MAX_SHARD_BYTES = 500 * 1024 * 1024
READ_IN_PROCESS = True  # read and check images in a forked child process where that is safe (see image_reader)
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
    rows: list[PlannedFrame] = []
    with iter_source(source, report) as groups:
        # Imported here, not at the top: pyarrow, numpy and jinja2 take a third of a second to load,
        # which the exports' parse in the worker processes now hides.
        from . import splits, writing

        for frames in groups:
            rows.extend(_plan_frames(frames, source, report))
    if not rows:
        raise BuildError(f"{source_path}: nothing usable (no frame with an image and a label)\n" + report.format_text())
    mean_image_bytes = _mean_image_bytes([row.frame for row in rows])
    # Started now, so the reader process readies its memory while this one splits.
    batch_bytes = int(writing.READ_BATCH * mean_image_bytes)
    reader = open_image_reader(2 * batch_bytes, expected_batch_bytes=batch_bytes, use_process=READ_IN_PROCESS)
    try:
        groups = splits.stream_split([r.frame for r in rows], seed)
        members: dict[str, list[str]] = {config: [] for config in schema.CONFIGS}
        for row in rows:
            for config in row.configs:
                members[config].append(row.frame.image_id)
        paper = {config: splits.paper_split(members[config], config, seed) for config in schema.CONFIGS}
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
            result = writing.write(temporary, source, plan, set(configs), paper, report, version, progress, frames_per_shard, reader)
            _replace(temporary, out)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    finally:
        reader.close()
    result.out = out
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
