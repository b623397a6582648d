"""Parquet files whose image column is written straight from the buffers the images were read into.

pyarrow writes every page of the file, but is handed a stand-in for each row's image: a few bytes
naming the image instead of the image, which pyarrow dictionary-encodes like the images themselves.
As its output goes by, each stand-in dictionary page is replaced by the real one (the same page header with the real sizes, then each
image as PLAIN `BYTE_ARRAY`: a 4-byte little-endian length and the bytes), and at the end the footer's
offsets and sizes are moved by what each replacement added. The file is the one pyarrow writes when
given the images themselves (a test checks this byte for byte), without pyarrow hashing, encoding
and copying each image into fresh buffers: on the 34 shared streams that was over a CPU-second, and
on a VM whose untouched memory is slow to fault in, the better part of the build's time.

The stand-in dictionary pages are found by walking the page headers from the start of the file
(every byte before the footer belongs to a page), so no assumption is made about how pyarrow
splits its writes. Anything unexpected (no stand-in page for a row group, a page of the wrong size,
a page index) is an error, never a silently wrong file.
"""
from __future__ import annotations

import bisect
import os
import struct
from collections import deque
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from . import thrift_compact as thrift

MAGIC = b"PAR1"
DICTIONARY_PAGE = 2
_STAND_IN_BYTES = 12  # 8-byte tag of this writer + 4-byte index

# Parquet thrift field ids (parquet.thrift)
_PAGE_TYPE, _PAGE_UNCOMPRESSED, _PAGE_COMPRESSED, _PAGE_DICTIONARY_HEADER = 1, 2, 3, 7
_DICTIONARY_NUM_VALUES = 1
_FILE_ROW_GROUPS = 4
_GROUP_COLUMNS, _GROUP_TOTAL_BYTES, _GROUP_FILE_OFFSET, _GROUP_COMPRESSED = 1, 2, 5, 6
_CHUNK_FILE_OFFSET, _CHUNK_META, _CHUNK_INDEXES = 2, 3, (4, 5, 6, 7)
_META_PATH, _META_UNCOMPRESSED, _META_COMPRESSED, _META_STATISTICS = 3, 6, 7, 12
_META_OFFSETS = (9, 10, 11, 14)  # data page, index page, dictionary page, bloom filter
_META_SIZE_STATISTICS, _SIZE_UNENCODED_BYTES = 16, 1


class ParquetLayoutError(RuntimeError):
    """pyarrow's output is not laid out as this writer expects; nothing usable was written."""


class _Spool:
    """The file object pyarrow writes to: bytes are held until their pages are walked."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.base = 0  # file offset of data[0]
        self.closed = False

    def write(self, data) -> int:
        self.data += data
        return len(data)

    def tell(self) -> int:
        return self.base + len(self.data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class ImageParquetWriter:
    """Writes row groups whose `image_column` (binary, dictionary-encoded) holds images given as buffers.

    `write_row_group(table, images, indices)`: `table`'s image column is `stand_ins(indices)`, row k
    standing for `images[indices[k]]` (buffers: bytes, memoryview, ...). The images must be
    distinct, as the values of any Parquet dictionary (pyarrow reads a repeated value as one,
    shifting the indices after it), and each used by some row. `release` is called once the images
    have been copied into `sink` (so their buffer can be reused).
    """

    def __init__(self, sink, schema: pa.Schema, image_column: str = "image.bytes", **options) -> None:
        self.sink = sink
        self.image_path = [part.encode() for part in image_column.split(".")]
        self.tag = os.urandom(8)  # never reaches the file: each stand-in page is replaced
        self.spool = _Spool()
        options = dict(options, write_statistics=False, write_page_index=False, write_page_checksum=False)
        self.writer = pq.ParquetWriter(self.spool, schema, **options)
        self.walked = 0  # file offset (in pyarrow's output) up to which pages have been walked
        self.emitted = 0  # file offset (in pyarrow's output) up to which bytes went to the sink
        self.waiting: deque = deque()  # per row group not yet replaced: (images, unencoded bytes, release)
        self.page_ends: list[int] = []  # pyarrow-output offset where each stand-in page ends
        self.growth: list[int] = []  # cumulative bytes the replacements added, up to each page
        self.unencoded: list[int] = []  # per row group: bytes of its image values, one per row
        self._stand_ins: list[bytes] = []

    def stand_ins(self, indices: Sequence[int]) -> pa.Array:
        """The image column of rows whose images are `images[k]` for k in `indices`."""
        while len(self._stand_ins) <= max(indices, default=0):
            self._stand_ins.append(self.tag + struct.pack(">I", len(self._stand_ins)))
        values = b"".join([self._stand_ins[k] for k in indices])
        offsets = struct.pack(f"<{len(indices) + 1}i", *range(0, (len(indices) + 1) * _STAND_IN_BYTES, _STAND_IN_BYTES))
        # from buffers, not pa.array: the first pa.array call of a process imports pandas
        return pa.Array.from_buffers(pa.binary(), len(indices), [None, pa.py_buffer(offsets), pa.py_buffer(values)])

    def write_row_group(self, table: pa.Table, images: Sequence, indices: Sequence[int],
                        release: Callable[[], None] | None = None) -> None:
        """`indices`: the image index of each row (as in the table), for the footer's size statistics."""
        self.waiting.append((images, sum(len(images[k]) for k in indices), release))
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._walk(final=False)

    def close(self) -> None:
        self.writer.close()
        data = self.spool.data
        if len(data) < 12 or bytes(data[-4:]) != MAGIC:
            raise ParquetLayoutError("pyarrow's output does not end with the Parquet magic")
        footer_length = struct.unpack("<I", data[-8:-4])[0]
        footer_start = self.spool.tell() - 8 - footer_length
        self._walk(final=True, until=footer_start)
        if self.waiting:
            raise ParquetLayoutError(f"{len(self.waiting)} row group(s) got no stand-in dictionary page to replace")
        footer = self._moved_footer(bytes(data[footer_start - self.spool.base : -8]))
        self.sink.write(footer)
        self.sink.write(struct.pack("<I", len(footer)) + MAGIC)

    def abandon(self) -> None:
        """After a failure: no footer from pyarrow's writer, now or at garbage collection."""
        self.writer.is_open = False

    def _walk(self, final: bool, until: int | None = None) -> None:
        spool = self.spool
        data = spool.data
        if self.walked == 0:
            if len(data) < 4:
                return
            if bytes(data[:4]) != MAGIC:
                raise ParquetLayoutError("pyarrow's output does not start with the Parquet magic")
            self.walked = 4
        while until is None or self.walked < until:
            position = self.walked - spool.base
            try:
                header, body = thrift.decode_struct(data, position)
            except thrift.ThriftError:
                if final:
                    raise ParquetLayoutError(f"unreadable page header at offset {self.walked}") from None
                break  # the rest of the page is still to come
            end = body + thrift.get(header, _PAGE_COMPRESSED, 0)
            if end > len(data):
                if final:
                    raise ParquetLayoutError(f"page at offset {self.walked} runs past the footer")
                break
            if thrift.get(header, _PAGE_TYPE) == DICTIONARY_PAGE and self._is_stand_in(data, body, end):
                self._emit_upto(self.walked)
                self._replace(header, data, position, body, end)
                self.emitted = spool.base + end
            self.walked = spool.base + end
        if until is not None and self.walked != until:
            raise ParquetLayoutError(f"pages end at offset {self.walked}, the footer starts at {until}")
        self._emit_upto(self.walked)
        keep = self.walked - spool.base  # drop what is emitted; only a partial page stays
        if not final and keep:
            del data[:keep]
            spool.base = self.walked

    def _is_stand_in(self, data, body: int, end: int) -> bool:
        return end - body >= 4 + _STAND_IN_BYTES and data[body + 4 : body + 12] == self.tag and \
            struct.unpack_from("<I", data, body)[0] == _STAND_IN_BYTES

    def _replace(self, header: list, data, start: int, body: int, end: int) -> None:
        """The stand-in page at `data[start:end]` (its header up to `body`) goes out as the real one."""
        if not self.waiting:
            raise ParquetLayoutError("a stand-in dictionary page for a row group that was never written")
        images, unencoded, release = self.waiting.popleft()
        count = thrift.get(thrift.get(header, _PAGE_DICTIONARY_HEADER, []), _DICTIONARY_NUM_VALUES)
        if count != len(images) or end - body != len(images) * (4 + _STAND_IN_BYTES):
            raise ParquetLayoutError(f"stand-in dictionary page of {count} values for {len(images)} images")
        order = []  # the image each dictionary value stands for, in pyarrow's order
        for length, tag, number in struct.iter_unpack("<I8s4s", bytes(data[body:end])):
            number = int.from_bytes(number, "big")
            if length != _STAND_IN_BYTES or tag != self.tag or number >= len(images):
                raise ParquetLayoutError("a stand-in dictionary value that names no image")
            order.append(number)
        if sorted(order) != list(range(len(images))):
            raise ParquetLayoutError("the stand-in dictionary does not name each image once")
        images = [images[k] for k in order]
        size = sum(4 + len(image) for image in images)
        if size >= 1 << 31:
            raise ParquetLayoutError(f"a row group's images take {size} bytes; a Parquet page holds under 2 GiB")
        thrift.put(header, _PAGE_UNCOMPRESSED, thrift.I32, size)
        thrift.put(header, _PAGE_COMPRESSED, thrift.I32, size)
        new_header = thrift.encode_struct(header)
        write = self.sink.write
        write(new_header)
        for image in images:
            write(struct.pack("<I", len(image)))
            write(image)
        if release is not None:
            release()
        added = len(new_header) + size - (end - start)
        self.page_ends.append(self.spool.base + end)
        self.growth.append((self.growth[-1] if self.growth else 0) + added)
        self.unencoded.append(unencoded)

    def _emit_upto(self, offset: int) -> None:
        if offset > self.emitted:
            data = self.spool.data
            start = self.emitted - self.spool.base
            self.sink.write(memoryview(data)[start : offset - self.spool.base])
            self.emitted = offset

    def _moved(self, offset: int) -> int:
        """Where a byte at `offset` of pyarrow's output lies in the written file."""
        passed = bisect.bisect_right(self.page_ends, offset)
        return offset + (self.growth[passed - 1] if passed else 0)

    def _moved_footer(self, footer: bytes) -> bytes:
        fields, end = thrift.decode_struct(footer)
        if end != len(footer):
            raise ParquetLayoutError("footer has trailing bytes")
        groups = thrift.get(fields, _FILE_ROW_GROUPS).items
        if len(groups) != len(self.page_ends):
            raise ParquetLayoutError(f"{len(groups)} row groups but {len(self.page_ends)} image dictionary pages")
        previous = 0
        for number, group in enumerate(groups):
            added = self.growth[number] - previous
            previous = self.growth[number]
            found = False
            for chunk in thrift.get(group, _GROUP_COLUMNS).items:
                if any(thrift.get(chunk, field) is not None for field in _CHUNK_INDEXES):
                    raise ParquetLayoutError("page indexes are not supported")
                if thrift.get(chunk, _CHUNK_FILE_OFFSET):
                    thrift.put(chunk, _CHUNK_FILE_OFFSET, thrift.I64, self._moved(thrift.get(chunk, _CHUNK_FILE_OFFSET)))
                meta = thrift.get(chunk, _CHUNK_META)
                for field in _META_OFFSETS:
                    if thrift.get(meta, field) is not None:
                        thrift.put(meta, field, thrift.I64, self._moved(thrift.get(meta, field)))
                if thrift.get(meta, _META_PATH).items == self.image_path:
                    found = True
                    for field in (_META_UNCOMPRESSED, _META_COMPRESSED):
                        thrift.put(meta, field, thrift.I64, thrift.get(meta, field) + added)
                    thrift.drop(meta, _META_STATISTICS)
                    sizes = thrift.get(meta, _META_SIZE_STATISTICS)
                    if sizes is not None:
                        thrift.put(sizes, _SIZE_UNENCODED_BYTES, thrift.I64, self.unencoded[number])
            if not found:
                raise ParquetLayoutError(f"row group {number} has no {'.'.join(p.decode() for p in self.image_path)} column")
            for field in (_GROUP_TOTAL_BYTES, _GROUP_COMPRESSED):
                if thrift.get(group, field) is not None:
                    thrift.put(group, field, thrift.I64, thrift.get(group, field) + added)
            if thrift.get(group, _GROUP_FILE_OFFSET) is not None:
                thrift.put(group, _GROUP_FILE_OFFSET, thrift.I64, self._moved(thrift.get(group, _GROUP_FILE_OFFSET)))
        return thrift.encode_struct(fields)
