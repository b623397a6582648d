"""The acceptance counts of the 34 shared streams, read from the XML alone (counts need no pixels), against
the published numbers and an independent count (xml.etree, not our reader); and one rendered end-to-end
build of a few streams whose built counts must equal the XML-alone counts of those streams."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from fpus23_dataset import schema
from fpus23_dataset.build import build, splits
from fpus23_dataset.build.validate import fit_to_image
from fpus23_dataset.cvat import discover, read_stream
from fpus23_dataset.release.tables import class_counts, read_labels
from fpus23_dataset.report import Report
from fpus23_dataset.synth import render_annotations

EXPECTED = {
    "orientation": {"hdvb": 2902, "hdvf": 2896, "huvb": 3377, "huvf": 4559},
    "anatomy": {"head": 3003, "arms": 1121, "legs": 2159, "abdomen": 2227},
    "plane": {"ac": 104},
    "bounds": {"head": 4158, "arms": 3245, "legs": 4340, "abdomen": 5624},
}


@pytest.fixture(scope="module")
def xml_frames(shared_annotations):
    """Every frame of the 34 streams with a row in some config, as the build plans them (images of the export's size)."""
    source, report = discover(shared_annotations), Report()
    frames = []
    for stream in sorted(source.streams):
        for frame in read_stream(stream, source.streams[stream].xml_files, report):
            fit_to_image(frame, frame.width, frame.height, stream, report)
            if frame.configs:
                frames.append(frame)
    return frames, report


def _counts(frames) -> dict[str, Counter]:
    counts = {config: Counter() for config in schema.CONFIGS}
    for frame in frames:
        for config in frame.configs:
            if config == "bounds":
                counts[config]["(frames)"] += 1
                counts[config].update(b.category for b in frame.boxes)
            else:
                counts[config][frame.labels[config]] += 1
    return counts


def _independent_counts(shared_annotations):
    counts = {config: Counter() for config in EXPECTED}
    bounds_rows = 0
    for xml in sorted(shared_annotations.glob("*/annotations.xml")):
        for image in ET.parse(xml).getroot().iter("image"):
            values = {}
            for tag in image.findall("tag"):
                values.setdefault(tag.get("label"), set()).add(tag.find("attribute").text)
            for cvat_label, config, mapping in (
                ("Orientation", "orientation", None), ("location", "anatomy", None),
                ("diagnostic_plane", "plane", {"Abd_plane": "ac", "Head_plane": "bpd", "Femur_plane": "fl"}),
            ):
                if len(values.get(cvat_label, ())) == 1:
                    value = next(iter(values[cvat_label]))
                    counts[config][mapping[value] if mapping else value] += 1
            boxes = image.findall("box")
            bounds_rows += bool(boxes)
            counts["bounds"].update({"arm": "arms"}.get(b.get("label"), b.get("label")) for b in boxes)
    return counts, bounds_rows


def test_counts_match_the_paper_archive_and_an_independent_count(xml_frames, shared_annotations):
    frames, report = xml_frames
    totals = _counts(frames)
    bounds_frames = totals["bounds"].pop("(frames)")
    for config, expected in EXPECTED.items():
        assert {k: v for k, v in totals[config].items() if v} == expected, config
    assert bounds_frames == 8437 and sum(totals["bounds"].values()) == 17367
    assert sum(totals["orientation"].values()) == 13734 and sum(totals["anatomy"].values()) == 8510
    independent, bounds_rows = _independent_counts(shared_annotations)
    assert {c: dict(v) for c, v in independent.items()} == {c: dict(EXPECTED[c]) for c in EXPECTED}
    assert bounds_rows == bounds_frames
    # the duplicated tags are reported, counted once
    assert report.counts["duplicate_tag"] == 306  # 304 Orientation + 2 diagnostic_plane
    assert report.counts.get("conflicting_tag", 0) == 0 and not report.omitted


def test_real_splits_are_stream_grouped_and_cover_classes(xml_frames):
    frames, _ = xml_frames
    split_of = splits.stream_split(frames, seed=0)
    assert len(split_of) == 34
    for config in ("orientation", "anatomy"):
        for split in schema.SPLITS:
            held = {f.labels[config] for f in frames if config in f.labels and split_of[f.split_group] == split}
            assert held == set(schema.class_names(config)), (config, split)


def test_real_paper_protocol_within_one_percent(xml_frames):
    frames, _ = xml_frames
    for config, ratios in schema.PAPER_RATIOS.items():
        counts = Counter(splits.paper_split([f.image_id for f in frames if config in f.configs], config, 0).values())
        total = sum(counts.values())
        for split, ratio in ratios.items():
            assert abs(counts[split] / total - ratio) < 0.01, (config, counts)


FEW_STREAMS = ("stream_huvb_aroundhead_v", "stream_huvb_longrec_v", "stream_hdvf_aroundlegs_v")  # duplicated tags, no boxes, legs


def test_a_rendered_build_of_a_few_streams_has_the_xml_counts(xml_frames, shared_annotations, tmp_path):
    rendered = tmp_path / "archive"
    render_annotations(shared_annotations, rendered, workers=2, progress=False, streams=FEW_STREAMS)
    result = build(rendered, tmp_path / "fpus23", "1.0.0", progress=False)
    built = {config: Counter() for config in schema.CONFIGS}
    for config, per_split in class_counts(tmp_path / "fpus23").items():
        for counter in per_split.values():
            built[config].update(counter)
    expected = _counts([f for f in xml_frames[0] if f.stream in FEW_STREAMS])
    assert {c: +v for c, v in built.items()} == {c: +v for c, v in expected.items()}
    assert sum(expected["orientation"].values()) > 500 and expected["bounds"]["(frames)"] > 100
    assert result.report.counts.get("corrupt_image", 0) == 0
    streams_per_split = {}
    for config in schema.CONFIGS:
        for record in read_labels(tmp_path / "fpus23", config).values():
            streams_per_split.setdefault(record["stream"], set()).add(record["split"])
    assert set(streams_per_split) == set(FEW_STREAMS) and all(len(s) == 1 for s in streams_per_split.values())
