from __future__ import annotations

import io

import pytest
from PIL import Image

from fpus23_dataset.build.images import CorruptImage, inspect_image, read_checked


def _encoded(fmt: str = "PNG", size=(64, 40), mode: str = "L") -> bytes:
    image = Image.frombytes(mode, size, bytes((k * 7) % 256 for k in range(size[0] * size[1] * len(mode))))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_any_format_pillow_reads_is_described():
    for fmt, mode in (("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("BMP", "RGB"), ("TIFF", "L"), ("WEBP", "RGB")):
        info = inspect_image(_encoded(fmt, mode=mode))
        assert (info.format, info.width, info.height) == (fmt, 64, 40), fmt


def test_a_flipped_byte_or_a_cut_fails_the_deep_check_only():
    data = bytearray(_encoded())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(CorruptImage, match="checksum|crc|CRC"):
        inspect_image(bytes(data))
    assert inspect_image(bytes(data), verify=False).width == 64  # the header alone looks fine
    for cut in (_encoded()[:-20], _encoded("JPEG", mode="RGB")[:-200], b"\x89PNG\r\n\x1a\n truncated", b"", b"not an image"):
        with pytest.raises(CorruptImage):
            inspect_image(cut)


def test_read_checked_refuses_a_huge_file_unread(tmp_path, monkeypatch):
    from fpus23_dataset.build import images

    path = tmp_path / "a.png"
    path.write_bytes(_encoded())
    data, info = read_checked(path)
    assert data == path.read_bytes() and info.size == len(data)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data) - 1)
    with pytest.raises(CorruptImage, match="over"):
        read_checked(path)
