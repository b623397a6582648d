"""One Parquet shard of one config, written the way `datasets` writes Parquet for the Hub.

pyarrow's `ParquetWriter` with the options `datasets.io.parquet.ParquetDatasetWriter` uses:
content-defined chunking (`datasets.config.DEFAULT_CDC_OPTIONS`, recorded in the file's key-value
metadata as `datasets` records it), the page index, column statistics, and `datasets`' own
per-column options (image bytes PLAIN and uncompressed, the other columns dictionary + snappy).
With CDC, page boundaries follow the content, so the Hub's chunk store keeps an image that several
configs share once, and a new version uploads only the pages that changed.

Row groups stay under `datasets.config.MAX_ROW_GROUP_SIZE` so the dataset viewer can page through a
file. A shard is a unit of work for a process pool: it reads its images itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..errors import UserError
from .features import arrow_schema, features_for


class Row(NamedTuple):
    """One row of a config: the frame's fields, its target, and where its image is."""

    image_path: str
    image_size: int  # bytes, as checked; a shard refuses a file whose size changed since
    image_name: str  # `image.path`: `<stream>/<frame name>`
    image_id: str
    stream: str
    frame: int
    probe: int | None
    width: int
    height: int
    paper_split: str
    target: Any  # class index, or a list of objects {id, bbox, category, area}


@dataclass(frozen=True)
class Layout:
    """How a config's files are written: worked out once (it needs `datasets`), carried by each shard,
    so the worker processes never import `datasets`."""

    schema: pa.Schema
    options: dict
    row_group_bytes: int


@dataclass(frozen=True)
class Shard:
    path: Path
    config: str
    rows: Sequence[Row]
    layout: Layout


class SourceChanged(UserError):
    pass


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


def _columns(rows: Sequence[Row], config: str, images: pa.Array, parquet_schema: pa.Schema) -> pa.Table:
    image_type = parquet_schema.field("image").type
    values = {
        "image": pa.StructArray.from_arrays([images, pa.array([r.image_name for r in rows], pa.string())], fields=list(image_type)),
        "image_id": [r.image_id for r in rows], "stream": [r.stream for r in rows], "frame": [r.frame for r in rows],
        "probe": [r.probe for r in rows], "width": [r.width for r in rows], "height": [r.height for r in rows],
        "paper_split": [r.paper_split for r in rows],
        ("objects" if config == schema.DETECTION_TASK else "label"): [r.target for r in rows],
    }
    arrays = [values[f.name] if isinstance(values[f.name], pa.Array) else pa.array(values[f.name], f.type) for f in parquet_schema]
    return pa.Table.from_arrays(arrays, schema=parquet_schema)


def _read_images(rows: Sequence[Row], buffer: bytearray) -> pa.Array:
    """The rows' image files read back to back into `buffer` (reused row group after row group: fresh
    memory is what reading costs most here), as an Arrow binary array over it, without a copy."""
    offsets = np.zeros(len(rows) + 1, np.int32)
    view = memoryview(buffer)
    for k, row in enumerate(rows):
        start = int(offsets[k])
        with open(row.image_path, "rb", buffering=0) as fh:
            size = fh.readinto(view[start : start + row.image_size])
            if size != row.image_size or fh.read(1):
                raise SourceChanged(f"{row.image_path}: changed while the build ran ({row.image_size:,} bytes when "
                                    f"checked); run the build again")
        offsets[k + 1] = start + size
    return pa.BinaryArray.from_buffers(pa.binary(), len(rows), [None, pa.py_buffer(offsets), pa.py_buffer(buffer)])


def write_shard(shard: Shard) -> int:
    """Write the shard's rows in order; returns the file's size. Row groups are cut before they pass
    MAX_ROW_GROUP_SIZE (image bytes dominate; the other columns are a few dozen bytes a row)."""
    parquet_schema, options, limit = shard.layout.schema, shard.layout.options, shard.layout.row_group_bytes
    groups: list[list[Row]] = [[]]
    size = 0
    for row in shard.rows:
        if groups[-1] and size + row.image_size > limit:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += row.image_size
    buffer = bytearray(max(sum(r.image_size for r in group) for group in groups))
    shard.path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(shard.path, parquet_schema, **options) as writer:
        for group in groups:
            writer.write_table(_columns(group, shard.config, _read_images(group, buffer), parquet_schema))
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(options["use_content_defined_chunking"])})
    return os.stat(shard.path).st_size
