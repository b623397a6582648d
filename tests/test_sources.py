from __future__ import annotations

import json
import shutil

import pytest

from fpus23_dataset.cli import main
from fpus23_dataset.report import Report
from fpus23_dataset.cvat import SourceError, discover, read_source

from helpers import LOCATION, ORIENT, PROBE, box, export, image, tag, write, write_png


def _public_stream(root, stream, images_in="beside"):
    write(root / stream / "annotations.xml", export(
        image("frame_000000.png", tag(*ORIENT, "hdvb"), tag(*PROBE, "h"), box("head", 10, 10, 100, 100)),
        image("frame_000001.png", tag(*ORIENT, "hdvb"), tag(*LOCATION, "head")),
    ))
    folder = {"beside": root / stream, "images": root / stream / "images", "four_poses": root / "four_poses" / stream}[images_in]
    for name in ("frame_000000.png", "frame_000001.png"):
        write_png(folder / name)


@pytest.mark.parametrize("images_in", ["beside", "images", "four_poses"])
def test_public_layout(tmp_path, images_in):
    _public_stream(tmp_path, "stream_a", images_in)
    source = discover(tmp_path)
    assert source.layout == "public" and list(source.streams) == ["stream_a"]
    report = Report()
    frames = read_source(source, report)
    assert [f.image_id for f in frames] == ["stream_a/frame_000000", "stream_a/frame_000001"]
    assert all(f.image_path.is_file() for f in frames)
    assert report.counts.get("missing_image", 0) == 0


def test_archive_layout_inside_a_wrapping_folder(procedural_source, tmp_path):
    wrapped = tmp_path / "download" / "Dataset"
    shutil.copytree(procedural_source, wrapped)
    source = discover(tmp_path / "download")
    assert source.layout == "archive" and source.root == wrapped
    assert set(source.plane_folders) == {"ac", "bpd", "fl", "no_plane"}
    kinds = {name: [p.parents[2].name for p in s.xml_files] for name, s in source.streams.items()}
    assert kinds["stream_hdvb_aroundhead_h"] == ["annos", "boxes"]
    assert kinds["stream_hdvb_longrec_v"] == ["annos"]  # a longrec stream has no boxes export
    assert all(s.image_dirs == [wrapped / "four_poses" / name] for name, s in source.streams.items())


def test_plane_folders_alone_nested_flat_and_unknown(tmp_path):
    write_png(tmp_path / "AC_PLANE" / "stream_a" / "frame_000003.png")
    write_png(tmp_path / "BPD_PLANE" / "stream_b_frame_000007.png")
    write_png(tmp_path / "NO_PLANE" / "img_0123.png")
    source = discover(tmp_path)
    assert source.layout == "planes"
    frames = read_source(source, Report())
    got = {(f.stream, f.name, f.labels["plane"], f.split_group) for f in frames}
    assert got == {
        ("stream_a", "frame_000003.png", "ac", "stream_a"),
        ("stream_b", "frame_000007.png", "bpd", "stream_b"),
        ("NO_PLANE", "img_0123.png", "no_plane", "NO_PLANE#2"),
    }


def test_missing_and_unannotated_images_are_counted(tmp_path):
    _public_stream(tmp_path, "stream_a")
    (tmp_path / "stream_a" / "frame_000001.png").unlink()
    write_png(tmp_path / "stream_a" / "frame_000099.png")
    report = Report()
    frames = read_source(discover(tmp_path), report)
    assert [f.name for f in frames] == ["frame_000000.png"]
    assert report.counts["missing_image"] == 1 and report.counts["unannotated_image"] == 1
    assert report.excluded == {"orientation": {"missing_image": 1}, "anatomy": {"missing_image": 1}}


def test_nothing_found_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no CVAT exports found"):
        discover(tmp_path / "empty")
    with pytest.raises(SourceError, match="no such file"):
        discover(tmp_path / "nope")


def test_validate_cli_exit_codes_and_json(tmp_path, capsys):
    _public_stream(tmp_path / "ok", "stream_a")
    assert main(["validate", str(tmp_path / "ok"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["usable_frames"] == 2 and report["totals"]["rows_orientation"] == 2

    # Exports but no image at all: nothing usable -> non-zero, and the reason is printed.
    write(tmp_path / "noimg" / "stream_a" / "annotations.xml", export(image("frame_000000.png", tag(*ORIENT, "hdvb"))))
    assert main(["validate", str(tmp_path / "noimg")]) == 1
    captured = capsys.readouterr()
    assert "missing_image: 1" in captured.out and "nothing usable" in captured.err
    assert main(["validate", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line, no traceback


def test_validate_deep_finds_a_flipped_byte(tmp_path, capsys):
    _public_stream(tmp_path, "stream_a")
    png = tmp_path / "stream_a" / "frame_000000.png"
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    assert main(["validate", str(tmp_path), "--json"]) == 0  # headers alone look fine
    assert "corrupt_image" not in json.loads(capsys.readouterr().out)["counts"]
    assert main(["validate", str(tmp_path), "--json", "--deep"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["corrupt_image"]["count"] == 1


def test_merged_reports_keep_the_details_adding_in_order_keeps():
    from fpus23_dataset.report import MAX_DETAILS_PER_CODE

    one, parts = Report(), [Report(), Report()]
    for k in range(MAX_DETAILS_PER_CODE + 50):
        for target in (one, parts[k * 2 // (MAX_DETAILS_PER_CODE + 50)]):
            target.add("duplicate_tag", f"f{k}", None, "m")
    parts[1].omit("stream_x", "cut")
    merged = Report()
    for part in parts:
        merged.merge(part)
    one.omit("stream_x", "cut")
    assert merged.to_dict() == one.to_dict() and len(merged.issues) == MAX_DETAILS_PER_CODE


def test_the_shared_streams_read_whole(shared_annotations):
    """No images here: every frame is reported missing, after its export was read whole."""
    report = Report()
    assert read_source(discover(shared_annotations), report) == []
    assert report.totals["annotated_frames"] == 13_734 and report.counts["missing_image"] == 13_734
    assert report.counts["duplicate_tag"] > 0 and not report.omitted
