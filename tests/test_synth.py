from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fpus23_dataset import schema
from fpus23_dataset.synth import FrameSpec, Style, render
from fpus23_dataset.report import Report
from fpus23_dataset.cvat import SourceError, discover, read_source
from fpus23_dataset.synth import procedural_frames, procedural_stream_names, render_annotations, render_procedural

BASE = FrameSpec("stream_t", 5, "hdvb", "head", None, "h", (("head", 250.0, 110.0, 150.0, 130.0),))


def test_frames_are_deterministic_per_seed():
    a, b = render(BASE, seed=7), render(BASE, seed=7)
    assert a.shape == (schema.FRAME_HEIGHT, schema.FRAME_WIDTH) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(BASE, seed=8))


def test_sector_is_black_outside_the_fan():
    image = render(BASE)
    assert image[-1, 0] == 0 and image[-1, -1] == 0 and image[0, 0] == 0  # corners outside the fan
    assert image[200, 336] > 0


def _box_pixels(spec: FrameSpec) -> np.ndarray:
    _, x, y, w, h = spec.boxes[0]
    return render(spec).astype(np.float32)[int(y) : int(y + h), int(x) : int(x + w)]


def test_anatomies_look_different_inside_the_same_box():
    crops = {}
    for category in schema.BOX_CATEGORIES:
        spec = FrameSpec("stream_t", 5, "hdvb", category, None, "h", ((category, 250.0, 110.0, 150.0, 130.0),))
        crops[category] = _box_pixels(spec)
    for a in schema.BOX_CATEGORIES:
        for b in schema.BOX_CATEGORIES:
            if a < b:
                assert np.abs(crops[a] - crops[b]).mean() > 8, (a, b)
    # the skull is a bright ring: the head box border is brighter than its centre
    head = crops["head"]
    assert head[:, :15].mean() + head[:, -15:].mean() > 2 * head[50:80, 60:90].mean() * 0.8


def test_orientation_cues_are_where_they_should_be():
    def spec(orientation):
        return FrameSpec("stream_t", 5, orientation, None, None, "v", ())

    def near_far(image):  # mean brightness of bands just above / below the fluid's middle
        return image[60:150, 150:520].mean(), image[230:330, 150:520].mean()

    hd, hu = render(spec("hdvb")).astype(float), render(spec("huvb")).astype(float)
    # placenta on the far wall for head-down, on the near wall for head-up
    (hd_near, hd_far), (hu_near, hu_far) = near_far(hd), near_far(hu)
    assert hd_far - hd_near > hu_far - hu_near + 3
    # the cues survive a left-right flip (the paper's probe-inversion augmentation)
    flipped = hd[:, ::-1]
    assert near_far(flipped)[1] - near_far(flipped)[0] > hu_far - hu_near + 3
    vb, vf = render(spec("hdvb")).astype(float), render(spec("hdvf")).astype(float)
    assert not np.array_equal(vb, vf)


def test_plane_cues_change_the_frame():
    for category, plane in (("head", "bpd"), ("abdomen", "ac"), ("legs", "fl")):
        with_plane = FrameSpec("s", 1, "hdvb", category, plane, "h", ((category, 250.0, 110.0, 150.0, 130.0),))
        without = FrameSpec("s", 1, "hdvb", category, "no_plane", "h", ((category, 250.0, 110.0, 150.0, 130.0),))
        assert np.abs(_box_pixels(with_plane) - _box_pixels(without)).mean() > 2, plane


def test_another_machine_style_looks_different():
    other = Style(tissue=0.45, speckle_sigma=0.4, gamma=1.3, name="other-machine")
    assert np.abs(render(BASE).astype(float) - render(BASE, style=other).astype(float)).mean() > 5


def test_procedural_streams_cover_every_class():
    names = procedural_stream_names(16)
    assert len(set(names)) == 16
    frames = [f for name in names for f in procedural_frames(name, 20)]
    assert {f.labels["orientation"] for f in frames} == set(schema.ORIENTATION.classes)
    assert {f.labels["anatomy"] for f in frames if "anatomy" in f.labels} == set(schema.ANATOMY.classes)
    assert {b.category for f in frames for b in f.boxes} == set(schema.BOX_CATEGORIES)
    assert {f.labels["plane"] for f in frames if "plane" in f.labels} == {"ac", "bpd", "fl"}
    for f in frames:
        for b in f.boxes:
            assert 0 <= b.x and 0 <= b.y and b.x + b.w <= 672 and b.y + b.h <= 389


def test_procedural_output_is_the_archive_layout_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        render_procedural(out, streams=5, frames_per_stream=3, plane_images=8, seed=11, workers=2, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert (a / "four_poses" / "stream_hdvb_aroundhead_h" / "frame_000000.png").is_file()
    assert (a / "annos" / "annotation" / "stream_hdvb_aroundhead_h" / "annotations.xml").is_file()
    assert (a / "boxes" / "annotation" / "stream_hdvb_aroundhead_h" / "annotations.xml").is_file()
    assert not (a / "boxes" / "annotation" / "stream_hdvb_longrec_v").exists()
    assert {p.name for p in a.iterdir() if p.name.endswith("_PLANE")} == set(schema.PLANE_FOLDERS)
    with Image.open(a / "four_poses" / "stream_hdvb_aroundhead_h" / "frame_000000.png") as img:
        assert img.size == (672, 389)


def test_render_for_real_annotations_keeps_geometry_and_tags(tmp_path, shared_annotations):
    stream = "stream_huvb_aroundhead_v"
    report = render_annotations(shared_annotations, tmp_path, streams=[stream], workers=2, progress=False)
    assert report.totals["rendered_frames"] == 305
    tags = (tmp_path / "annos" / "annotation" / stream / "annotations.xml").read_text()
    boxes = (tmp_path / "boxes" / "annotation" / stream / "annotations.xml").read_text()
    assert "<box" not in tags and "<tag" in tags and "<tag" not in boxes and "<box" in boxes
    rendered = read_source(discover(tmp_path), Report())
    original = read_source(discover(shared_annotations / stream / "annotations.xml"), Report())
    assert len(rendered) == 305 and len(original) == 0  # the original has no images beside it
    from fpus23_dataset.cvat import read_stream

    truth = read_stream(stream, [shared_annotations / stream / "annotations.xml"], Report())
    assert [(f.name, f.labels, f.boxes) for f in rendered] == [(f.name, f.labels, f.boxes) for f in truth]
    with pytest.raises(SourceError, match="no such stream"):
        render_annotations(shared_annotations, tmp_path / "x", streams=["stream_nope"], progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything is written
