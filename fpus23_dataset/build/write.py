"""One unit of work of the build: a run of consecutive frames of one split, written into every
selected config's file for that run, the way `datasets` writes Parquet for the Hub.

Each image is read once, checked (Pillow: every PNG chunk CRC; other formats decoded), hashed, and
written into each config it belongs to; one that cannot be used is left out of every config and
reported. `pq.ParquetWriter` gets the options of `datasets`' `ParquetDatasetWriter`: content-defined
chunking (`datasets.config.DEFAULT_CDC_OPTIONS`, recorded in the key-value metadata as `datasets`
records it, so the Hub's chunk store keeps an image the configs share once and a new version uploads
only changed pages), the page index, statistics, `datasets`' per-column options, and row groups under
`datasets.config.MAX_ROW_GROUP_SIZE` so the viewer can page through a file.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from .. import schema
from ..cvat import Frame
from ..errors import UserError
from ..report import Report
from .features import arrow_schema, features_for
from . import images as image_checks
from .images import CorruptImage, inspect_image
from .validate import fit_to_image, relative


class SourceChanged(UserError):
    pass


@dataclass(frozen=True)
class Layout:
    """How a config's files are written: worked out once (it needs `datasets`), carried by each unit,
    so the worker processes never import `datasets`."""

    schema: pa.Schema
    options: dict
    row_group_bytes: int


def layout(config: str) -> Layout:
    """The schema and the keyword arguments `datasets` gives `pq.ParquetWriter` for this config's features."""
    from datasets import config as hf_config
    from datasets.arrow_writer import get_parquet_column_options
    from datasets.utils.py_utils import convert_file_size_to_int

    parquet_schema = arrow_schema(config)
    options = {
        "use_content_defined_chunking": hf_config.DEFAULT_CDC_OPTIONS,
        "write_page_index": True,
        "write_statistics": True,
        **get_parquet_column_options(features_for(config), parquet_schema),
    }
    return Layout(parquet_schema, options, convert_file_size_to_int(hf_config.MAX_ROW_GROUP_SIZE))


def layouts_of(configs: Sequence[str]) -> dict[str, Layout]:
    return {config: layout(config) for config in configs}


class Planned(NamedTuple):
    """A frame as planned from the exports alone: its image's size when planned, its paper split per
    config, and the first of the object ids its boxes may take (ids are numbered over the whole build
    before any image is read, so a subset of configs numbers them alike)."""

    frame: Frame
    size: int
    paper: dict[str, str]
    first_id: int


@dataclass
class Unit:
    split: str
    number: int
    frames: Sequence[Planned]
    configs: Sequence[str]  # the configs written
    layouts: dict[str, Layout]
    folder: Path  # files go to <folder>/<config>/.<split>-<number>.parquet, renamed by the caller
    source_root: Path


@dataclass
class UnitResult:
    files: dict[str, tuple[Path, int, int]] = field(default_factory=dict)  # config -> (file, rows, image bytes)
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # config -> class -> rows
    digests: list[tuple[str, str]] = field(default_factory=list)  # (image_id, digest) of each frame written
    report: Report = field(default_factory=Report)


def _batches(frames: Sequence[Planned], limit: int) -> list[list[Planned]]:
    """Consecutive frames whose images fit in one row group (sizes as planned: the same cuts however
    many configs are written)."""
    batches: list[list[Planned]] = [[]]
    size = 0
    for planned in frames:
        if batches[-1] and size + planned.size > limit:
            batches.append([])
            size = 0
        batches[-1].append(planned)
        size += planned.size
    return batches


def _read(batch: Sequence[Planned], buffer: bytearray) -> tuple[np.ndarray, dict[int, str]]:
    """The batch's image files back to back in `buffer` (reused batch after batch: fresh memory is
    what reading costs most here); returns their offsets, and why any could not be read."""
    offsets = np.zeros(len(batch) + 1, np.int64)
    failed: dict[int, str] = {}
    view = memoryview(buffer)
    for k, planned in enumerate(batch):
        start = size = int(offsets[k])
        try:
            if reason := image_checks.too_large(planned.size):
                raise CorruptImage(reason)
            with open(planned.frame.image_path, "rb", buffering=0) as fh:
                size = start + fh.readinto(view[start : start + planned.size])
                if fh.read(1):
                    raise SourceChanged(f"{planned.frame.image_path}: grew while the build ran; run the build again")
        except CorruptImage as error:
            failed[k] = str(error)
        except OSError as error:
            failed[k] = f"cannot read: {error.strerror or error}"
        offsets[k + 1] = size
    return offsets, failed


def _target(config: str, frame: Frame, first_id: int):
    if config == schema.DETECTION_TASK:
        categories = schema.BOX_CATEGORIES
        return [{"id": first_id + k, "bbox": [round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2)],
                 "category": categories.index(b.category), "area": round(b.area, 2)} for k, b in enumerate(frame.boxes)]
    return schema.class_names(config).index(frame.labels[config])


def _table(config: str, kept: list[tuple[int, Planned]], images: pa.Array, parquet_schema: pa.Schema) -> pa.Table:
    probe = {name: k for k, name in enumerate(schema.PROBE.classes)}
    frames = [planned.frame for _, planned in kept]
    values = {
        "image": pa.StructArray.from_arrays(
            [pc.take(images, pa.array([position for position, _ in kept])), pa.array([f"{f.stream}/{f.name}" for f in frames])],
            fields=list(parquet_schema.field("image").type)),
        "image_id": [f.image_id for f in frames], "stream": [f.stream for f in frames], "frame": [f.index for f in frames],
        "probe": [probe.get(f.labels.get("probe", "")) for f in frames], "width": [f.width for f in frames],
        "height": [f.height for f in frames], "paper_split": [planned.paper[config] for _, planned in kept],
        ("objects" if config == schema.DETECTION_TASK else "label"): [_target(config, p.frame, p.first_id) for _, p in kept],
    }
    arrays = [values[f.name] if isinstance(values[f.name], pa.Array) else pa.array(values[f.name], f.type) for f in parquet_schema]
    return pa.Table.from_arrays(arrays, schema=parquet_schema)


def write_unit(unit: Unit) -> UnitResult:
    """Read, check and write the unit's frames into each selected config's file; returns what was written."""
    result = UnitResult()
    writers: dict[str, pq.ParquetWriter] = {}
    batches = _batches(unit.frames, min(layout.row_group_bytes for layout in unit.layouts.values()))
    buffer = bytearray(max(sum(p.size for p in batch if p.size <= image_checks.MAX_IMAGE_BYTES) for batch in batches))
    try:
        for batch in batches:
            wanted = [p for p in batch if set(p.frame.configs) & set(unit.configs)]
            offsets, failed = _read(wanted, buffer)
            images = pa.BinaryArray.from_buffers(pa.binary(), len(wanted), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buffer)])
            rows: dict[str, list[tuple[int, Planned]]] = defaultdict(list)
            for position, planned in enumerate(wanted):
                frame, data = planned.frame, memoryview(buffer)[offsets[position] : offsets[position + 1]]
                file = relative(frame.image_path, unit.source_root)
                try:
                    if position in failed:
                        raise CorruptImage(failed[position])
                    info = inspect_image(data)
                except CorruptImage as error:
                    result.report.add("corrupt_image", file, frame.image_id, str(error))
                    result.report.exclude(set(frame.configs) & set(unit.configs), "corrupt_image")
                    continue
                fit_to_image(frame, info.width, info.height, file, result.report)
                kept = [config for config in frame.configs if config in unit.configs]
                if kept:
                    result.digests.append((frame.image_id, "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)))
                for config in kept:
                    rows[config].append((position, planned))
                    if config == schema.DETECTION_TASK:
                        result.counts[config]["(frames)"] += 1
                        result.counts[config].update(b.category for b in frame.boxes)
                    else:
                        result.counts[config][frame.labels[config]] += 1
            for config, kept_rows in rows.items():
                layout = unit.layouts[config]
                if config not in writers:
                    path = unit.folder / config / f".{unit.split}-{unit.number:05d}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writers[config] = pq.ParquetWriter(path, layout.schema, **layout.options)
                    result.files[config] = (path, 0, 0)
                writers[config].write_table(_table(config, kept_rows, images, layout.schema))
                path, count, size = result.files[config]
                result.files[config] = (path, count + len(kept_rows), size + sum(int(offsets[p + 1] - offsets[p]) for p, _ in kept_rows))
            del images
    finally:
        for config, writer in writers.items():
            writer.add_key_value_metadata({"content_defined_chunking": json.dumps(unit.layouts[config].options["use_content_defined_chunking"])})
            writer.close()
    return result
