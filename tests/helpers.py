"""Small builders of CVAT exports and image files for tests."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'


def tag(label: str, attribute: str, value: str) -> str:
    return f'<tag label="{label}" source="manual"><attribute name="{attribute}">{value}</attribute></tag>'


def box(label: str, xtl, ytl, xbr, ybr) -> str:
    return f'<box label="{label}" occluded="0" source="manual" xtl="{xtl}" ytl="{ytl}" xbr="{xbr}" ybr="{ybr}" z_order="0"></box>'


def image(name: str, *children: str, width: int = 672, height: int = 389, id_: int = 0) -> str:
    return f'  <image id="{id_}" name="{name}" width="{width}" height="{height}">' + "".join(children) + "</image>\n"


def export(*images: str) -> str:
    return HEADER + "".join(images) + "</annotations>\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def png_bytes(mode: str = "L", size=(672, 389), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_png(path: Path, mode: str = "L", size=(672, 389), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(mode, size, seed))
    return path


ORIENT = ("Orientation", "Pose")
LOCATION = ("location", "View_fetus")
PLANE = ("diagnostic_plane", "plane")
PROBE = ("Probe", "orientation")
