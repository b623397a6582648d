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
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..errors import UserError
from .features import arrow_schema, features_for


@dataclass(frozen=True)
class Row:
    """One row of a config: the frame's fields, its target, and where its image is."""

    image_path: str
    image_size: int  # bytes, as checked; the shard refuses a file that changed since
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
class Shard:
    path: Path
    config: str
    rows: Sequence[Row]


class SourceChanged(UserError):
    pass


def row_group_bytes() -> int:
    from datasets import config
    from datasets.utils.py_utils import convert_file_size_to_int

    return convert_file_size_to_int(config.MAX_ROW_GROUP_SIZE)


def writer_options(config: str, parquet_schema: pa.Schema) -> dict:
    """The keyword arguments `datasets` gives `pq.ParquetWriter` for this config's features."""
    from datasets import config as hf_config
    from datasets.arrow_writer import get_parquet_column_options

    return {
        "use_content_defined_chunking": hf_config.DEFAULT_CDC_OPTIONS,
        "write_page_index": True,
        "write_statistics": True,
        **get_parquet_column_options(features_for(config), parquet_schema),
    }


def _record(row: Row, image: bytes, config: str) -> dict:
    target_column = "objects" if config == schema.DETECTION_TASK else "label"
    return {
        "image": {"bytes": image, "path": row.image_name}, "image_id": row.image_id, "stream": row.stream,
        "frame": row.frame, "probe": row.probe, "width": row.width, "height": row.height,
        "paper_split": row.paper_split, target_column: row.target,
    }


def _read(row: Row) -> bytes:
    with open(row.image_path, "rb") as fh:
        data = fh.read()
    if len(data) != row.image_size:
        raise SourceChanged(f"{row.image_path}: changed while the build ran ({row.image_size:,} bytes checked, "
                            f"{len(data):,} now); run the build again")
    return data


def write_shard(shard: Shard) -> int:
    """Write the shard's rows in order; returns the file's size. Row groups are cut before they pass
    MAX_ROW_GROUP_SIZE (image bytes dominate; the other columns are a few dozen bytes a row)."""
    parquet_schema = arrow_schema(shard.config)
    limit = row_group_bytes()
    options = writer_options(shard.config, parquet_schema)
    shard.path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(shard.path, parquet_schema, **options) as writer:
        records: list[dict] = []
        size = 0
        for row in shard.rows:
            if records and size + row.image_size > limit:
                writer.write_table(pa.Table.from_pylist(records, schema=parquet_schema))
                records, size = [], 0
            records.append(_record(row, _read(row), shard.config))
            size += row.image_size
        if records:
            writer.write_table(pa.Table.from_pylist(records, schema=parquet_schema))
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(options["use_content_defined_chunking"])})
    return os.stat(shard.path).st_size
