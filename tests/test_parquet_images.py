"""The image pages written from read buffers: the file must be the one pyarrow writes when given the images."""
from __future__ import annotations

import io
import random
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fpus23_dataset import thrift_compact as thrift
from fpus23_dataset.direct_io import DirectFile
from fpus23_dataset.features import stored_arrow_schema
from fpus23_dataset.parquet_images import ImageParquetWriter, ParquetLayoutError
from fpus23_dataset.row_group import RowGroupRows
from fpus23_dataset.cvat import Box, Frame

OPTIONS = dict(compression="NONE", dictionary_pagesize_limit=1 << 30, data_page_size=20_000,
               use_dictionary=["config", "image.bytes", "image.path", "image_id", "stream", "paper_split"])


def _groups(seed: int) -> list[tuple[list[bytes], RowGroupRows]]:
    """Row groups of random images (some empty, some large) and rows of every config, as the builder makes them."""
    rnd = random.Random(seed)
    ids = iter(range(1, 10**6)).__next__
    groups = []
    for number in range(6):
        count = rnd.randint(1, 40)
        images = [rnd.randbytes(rnd.choice([0, 5, 3000, 70_000])) + bytes([number, k]) for k in range(count)]
        rows = RowGroupRows()
        for position in range(count):
            frame = Frame("s%d" % number, f"frame_{position:06d}.png", position, width=672, height=389,
                          labels={"orientation": "hdvb", "anatomy": "legs"} if position % 3 else {"plane": "fl"},
                          boxes=[Box("head", 1.5, 2.25, 30.0, 40.0)] * (position % 4))
            kept = [(config, rnd.choice(["train", "test"])) for config in ("orientation", "anatomy", "plane") if config in frame.labels]
            rows.add_frame(position, frame, kept + [("bounds", "validation")] * bool(frame.boxes), ids)
        groups.append((images, rows))
    return groups


def _with_images(table: pa.Table, images: list[bytes], indices: list[int]) -> pa.Table:
    """The same table with each row's real image: what pyarrow alone would be given."""
    column = table.column("image").chunk(0)
    image = pa.StructArray.from_arrays(
        [pa.array([images[k] for k in indices], pa.binary()), column.field("path")], fields=list(column.type))
    return table.set_column(table.schema.get_field_index("image"), table.schema.field("image"), image)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_file_is_byte_identical_to_what_pyarrow_writes_with_the_images(seed, tmp_path):
    schema = stored_arrow_schema()
    expected = io.BytesIO()
    reference = pq.ParquetWriter(expected, schema, write_statistics=False, **OPTIONS)
    with DirectFile(tmp_path / "ours.parquet", chunk=64 * 1024) as sink:
        writer = ImageParquetWriter(sink, schema, **OPTIONS)
        released = []
        for number, (images, rows) in enumerate(_groups(seed)):
            table, stored, indices = rows.table(schema, writer.stand_ins)
            used = [memoryview(images[p]) for p in stored]
            writer.write_row_group(table, used, indices, release=lambda n=number: released.append(n))
            reference.write_table(_with_images(table, [images[p] for p in stored], indices), row_group_size=table.num_rows)
        writer.close()
        reference.close()
    ours = (tmp_path / "ours.parquet").read_bytes()
    assert released == list(range(6))  # each group's buffer handed back once its images were written
    assert ours == expected.getvalue()
    first_images, first_rows = _groups(seed)[0]
    batch = next(pq.ParquetFile(tmp_path / "ours.parquet").iter_batches(batch_size=len(first_rows), columns=["image"]))
    assert [row["bytes"] for row in batch.column(0).to_pylist()] == [first_images[p] for p in first_rows.positions]


def test_the_footer_is_rewritten_only_where_the_images_moved_it(tmp_path):
    """A pyarrow footer decodes and re-encodes to the same bytes; the image chunk's sizes carry the real images."""
    schema = stored_arrow_schema()
    images, rows = _groups(3)[1]
    out = io.BytesIO()
    writer = ImageParquetWriter(out, schema, **OPTIONS)
    table, stored, indices = rows.table(schema, writer.stand_ins)
    writer.write_row_group(table, [images[p] for p in stored], indices)
    writer.close()
    data = out.getvalue()
    footer = data[-8 - struct.unpack("<I", data[-8:-4])[0] : -8]
    fields, end = thrift.decode_struct(footer)
    assert end == len(footer) and thrift.encode_struct(fields) == footer
    (tmp_path / "f.parquet").write_bytes(data)  # read from a path: pyarrow can abort at exit after reading a Python file object
    chunk = pq.ParquetFile(tmp_path / "f.parquet").metadata.row_group(0)
    image_chunk = next(chunk.column(k) for k in range(chunk.num_columns) if chunk.column(k).path_in_schema == "image.bytes")
    assert image_chunk.total_uncompressed_size >= sum(len(images[p]) + 4 for p in stored)
    assert image_chunk.dictionary_page_offset < image_chunk.data_page_offset


def test_pyarrow_output_without_a_stand_in_page_is_an_error_not_a_wrong_file():
    schema = stored_arrow_schema()
    images, rows = _groups(4)[0]
    writer = ImageParquetWriter(io.BytesIO(), schema, **dict(OPTIONS, use_dictionary=["config"]))  # image bytes written PLAIN
    table, stored, indices = rows.table(schema, writer.stand_ins)
    writer.write_row_group(table, [images[p] for p in stored], indices)
    with pytest.raises(ParquetLayoutError, match="no stand-in dictionary page"):
        writer.close()


def test_thrift_compact_round_trips_every_type():
    nested = [thrift.Field(1, thrift.I32, -5), thrift.Field(2, thrift.TRUE, True)]
    fields = [
        thrift.Field(1, thrift.I8, -3), thrift.Field(2, thrift.I16, 300), thrift.Field(3, thrift.I64, -(1 << 40)),
        thrift.Field(4, thrift.DOUBLE, 2.5), thrift.Field(5, thrift.BINARY, b"bytes"), thrift.Field(6, thrift.FALSE, False),
        thrift.Field(40, thrift.LIST, thrift.ThriftList(thrift.I32, list(range(20)))),  # long delta, long list
        thrift.Field(41, thrift.MAP, thrift.ThriftMap(thrift.BINARY, thrift.I64, [(b"k", 1), (b"l", -2)])),
        thrift.Field(42, thrift.STRUCT, nested),
    ]
    data = thrift.encode_struct(fields)
    decoded, end = thrift.decode_struct(data)
    assert end == len(data) and decoded == fields
    with pytest.raises(thrift.ThriftError):
        thrift.decode_struct(data[:-3])
