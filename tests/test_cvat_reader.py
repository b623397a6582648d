from __future__ import annotations

import pytest

from fpus23_dataset.cvat import UntrustedXMLError, iter_images, read_stream, write_cvat_xml
from fpus23_dataset.report import Report

from helpers import LOCATION, ORIENT, PLANE, box, export, image, tag, write

XXE = """<?xml version="1.0"?>
<!DOCTYPE annotations [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<annotations><image id="0" name="frame_000000.png" width="672" height="389">
<tag label="Orientation" source="manual"><attribute name="Pose">&xxe;</attribute></tag></image></annotations>
"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<annotations><image id="0" name="frame_000000.png" width="672" height="389">
<tag label="Orientation" source="manual"><attribute name="Pose">&lol9;</attribute></tag></image></annotations>
"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE annotations SYSTEM "http://127.0.0.1:9/evil.dtd">
<annotations></annotations>
"""


@pytest.mark.parametrize("text", [XXE, LAUGHS, EXTERNAL_DTD], ids=["xxe", "billion-laughs", "external-dtd"])
def test_untrusted_xml_is_refused_with_a_clear_error(tmp_path, text):
    path = write(tmp_path / "s" / "annotations.xml", text)
    with pytest.raises(UntrustedXMLError, match="DTD or entity declaration") as caught:
        list(iter_images(path))
    assert str(path) in str(caught.value)
    # Through the stream reader it is reported and counted, not raised.
    report = Report()
    assert read_stream("s", [path], report) == []
    assert report.counts["untrusted_xml"] == 1
    assert report.issues[0].file == str(path)


def test_undeclared_entity_reference_is_refused(tmp_path):
    path = write(tmp_path / "annotations.xml", export(image("frame_000000.png", tag(*ORIENT, "&evil;"))))
    report = Report()
    read_stream("s", [path], report)
    assert report.counts["untrusted_xml"] + report.counts["malformed_xml"] == 1


def test_an_export_that_cannot_be_read_whole_omits_its_stream(tmp_path):
    """Strict: neither the frames before the cut nor the stream's other, readable exports contribute."""
    complete = export(*[image(f"frame_{i:06d}.png", tag(*ORIENT, "hdvb"), box("head", 1, 1, 9, 9)) for i in range(20)])
    bad = write(tmp_path / "a.xml", complete[: len(complete) // 2])
    good = write(tmp_path / "b.xml", export(image("frame_000001.png", tag(*ORIENT, "hdvb"))))
    report = Report()
    assert read_stream("s", [bad, good], report) == []
    assert report.counts["malformed_xml"] == 1 and report.omitted == {"s": f"{bad}: " + report.issues[0].message}
    assert "not well-formed" in report.issues[0].message
    assert report.counts.get("duplicate_tag", 0) == 0 and report.totals["xml_files"] == 0  # nothing of it counted
    clean = Report()
    assert [f.name for f in read_stream("s", [good], clean)] == ["frame_000001.png"] and not clean.omitted


def test_merge_of_tag_and_box_exports_with_duplicates_and_conflicts(tmp_path):
    tags = write(tmp_path / "annos.xml", export(
        image("frame_000001.png", tag(*ORIENT, "hdvb"), tag(*ORIENT, "hdvb"), tag(*LOCATION, "head")),
        image("frame_000002.png", tag(*ORIENT, "hdvb"), tag(*ORIENT, "huvf"), tag(*LOCATION, "legs")),
        image("frame_000003.png", tag(*PLANE, "Femur_plane"), tag("Bogus", "x", "y"), tag(*LOCATION, "tail")),
    ))
    boxes = write(tmp_path / "boxes.xml", export(
        image("frame_000001.png", box("head", 10, 20, 110, 220), box("arm", 1, 1, 30, 30)),
        image("frame_000002.png", box("legs", 5, 5, 5, 50), box("tail", 1, 1, 9, 9)),
    ))
    # The same box again (a tags export that also carries the boxes): counted once.
    again = write(tmp_path / "again.xml", export(image("frame_000001.png", box("head", 10, 20, 110, 220))))
    report = Report()
    frames = {f.name: f for f in read_stream("stream_x", [tags, boxes, again], report)}
    one, two, three = frames["frame_000001.png"], frames["frame_000002.png"], frames["frame_000003.png"]
    assert one.labels == {"orientation": "hdvb", "anatomy": "head"}
    assert [(b.category, b.x, b.y, b.w, b.h) for b in one.boxes] == [("head", 10, 20, 100, 200), ("arms", 1, 1, 29, 29)]
    assert "orientation" not in two.labels and two.labels["anatomy"] == "legs"
    assert two.boxes == []
    assert three.labels == {"plane": "fl"}
    assert one.image_id == "stream_x/frame_000001" and one.index == 1
    assert report.counts == {
        "duplicate_tag": 1, "conflicting_tag": 1, "degenerate_box": 1, "unknown_label": 2,
        "unknown_value": 1, "duplicate_box": 1,
    }
    assert report.excluded == {"orientation": {"conflicting_tag": 1}}
    conflict = next(i for i in report.issues if i.code == "conflicting_tag")
    assert conflict.frame == "stream_x/frame_000002" and "hdvb vs huvf" in conflict.message


def test_unsafe_image_names_are_refused(tmp_path):
    path = write(tmp_path / "a.xml", export(
        image("../../etc/passwd", tag(*ORIENT, "hdvb")), image("/abs.png", tag(*ORIENT, "hdvb")),
        image("frame_000001.png", tag(*ORIENT, "hdvb")),
    ))
    report = Report()
    frames = read_stream("s", [path], report)
    assert [f.name for f in frames] == ["frame_000001.png"]
    assert report.counts["unsafe_image_name"] == 2


def test_streaming_reader_keeps_memory_bounded(tmp_path):
    # 20k images; processed images are freed as we go, so the tree holds only the parser's read-ahead
    # (one input buffer of elements), never the whole file.
    body = "".join(image(f"frame_{i:06d}.png", tag(*ORIENT, "hdvb"), id_=i) for i in range(20_000))
    path = write(tmp_path / "big.xml", export(body))
    held = 0
    for element in iter_images(path):
        held = max(held, len(element.getparent()))
    assert held < 1000


def test_real_stream_with_duplicated_tags(shared_annotations):
    report = Report()
    frames = read_stream("stream_huvb_aroundhead_v", [shared_annotations / "stream_huvb_aroundhead_v" / "annotations.xml"], report)
    assert len(frames) == 305
    assert sum("orientation" in f.labels for f in frames) == 305
    assert report.counts["duplicate_tag"] == 304
    assert report.counts.get("conflicting_tag", 0) == 0


def test_writer_round_trips_through_the_reader(tmp_path, shared_annotations):
    report = Report()
    source = shared_annotations / "stream_hdvb_aroundabd_h" / "annotations.xml"
    frames = read_stream("stream_hdvb_aroundabd_h", [source], report)
    out = tmp_path / "copy.xml"
    write_cvat_xml(out, "stream_hdvb_aroundabd_h", frames)
    again = read_stream("stream_hdvb_aroundabd_h", [out], Report())
    assert [(f.name, f.labels, f.boxes) for f in again] == [(f.name, f.labels, f.boxes) for f in frames]


def test_box_coordinates_that_are_not_finite_numbers_are_reported(tmp_path):
    missing = '<box label="head" occluded="0" xtl="1" ytl="2" xbr="30" z_order="0"></box>'
    path = write(tmp_path / "s" / "annotations.xml", export(
        image("frame_000000.png", box("head", "nan", 1, 20, 20), box("legs", 1, 1, "inf", 20), box("arm", "1e999", 1, 5, 5)),
        image("frame_000001.png", box("abdomen", "abc", 1, 20, 20), missing, box("head", 3, 4, 3, 9)),
        image("frame_000002.png", box("head", " 10.5 ", "1e1", 20, 30)),
    ))
    report = Report()
    frames = read_stream("s", [path], report)
    messages = [i.message for i in report.issues if i.code == "degenerate_box"]
    assert report.counts["degenerate_box"] == 6
    assert sum("missing or non-numeric" in m for m in messages) == 5 and sum("has no area" in m for m in messages) == 1
    assert [f.boxes for f in frames[:2]] == [[], []]
    (kept,) = frames[2].boxes
    assert (kept.category, kept.x, kept.y, kept.w, kept.h) == ("head", 10.5, 10.0, 9.5, 20.0)
