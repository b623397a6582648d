from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from fpus23_dataset.images import CorruptImage, inspect_image


def _png(seed: int = 0, size=(64, 40), mode: str = "L") -> bytes:
    image = Image.frombytes(mode, size, bytes((seed + k * 7) % 256 for k in range(size[0] * size[1] * len(mode))))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_the_content_digest_changes_with_any_byte_and_only_then():
    data = _png(1)
    info = inspect_image(data)
    assert (info.width, info.height, info.mode) == (64, 40, "L") and info.digest.startswith("png-crc:")
    assert inspect_image(bytes(data)).digest == info.digest
    assert inspect_image(_png(2)).digest != info.digest
    # an extra ancillary chunk (valid CRC) before IEND, and bytes after IEND, both count
    end = len(data) - 12
    extra = data[:end] + _chunk(b"tEXt", b"note\x00x") + data[end:]
    assert inspect_image(extra).digest not in (info.digest, inspect_image(data + b"\x00").digest)
    assert inspect_image(data + b"\x00").digest != info.digest


def test_a_flipped_byte_in_image_data_fails_its_crc():
    data = bytearray(_png(3))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(CorruptImage, match="CRC"):
        inspect_image(bytes(data))
    assert inspect_image(bytes(data), verify=False).digest == ""  # the header check alone does not read it all
