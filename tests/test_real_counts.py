"""The acceptance counts: render the 34 shared streams, build, and compare with the published numbers
and with an independent count straight from the XML (xml.etree, not our reader)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from fpus23_dataset import schema
from fpus23_dataset.build import build
from fpus23_dataset.synth import render_annotations
from fpus23_dataset.tables import class_counts, read_labels

EXPECTED = {
    "orientation": {"hdvb": 2902, "hdvf": 2896, "huvb": 3377, "huvf": 4559},
    "anatomy": {"head": 3003, "arms": 1121, "legs": 2159, "abdomen": 2227},
    "plane": {"ac": 104},
    "bounds": {"head": 4158, "arms": 3245, "legs": 4340, "abdomen": 5624},
}


@pytest.fixture(scope="module")
def real_build(shared_annotations, tmp_path_factory):
    rendered = tmp_path_factory.mktemp("real") / "archive"
    render_annotations(shared_annotations, rendered, workers=2, progress=False)
    out = tmp_path_factory.mktemp("real-build") / "fpus23"
    result = build(rendered, out, "1.0.0", progress=False)
    return out, result


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


def test_counts_match_the_paper_archive_and_an_independent_count(real_build, shared_annotations):
    out, result = real_build
    built = class_counts(out)
    totals = {config: Counter() for config in EXPECTED}
    for config, per_split in built.items():
        for counter in per_split.values():
            totals[config].update(counter)
    frames = totals["bounds"].pop("(frames)")
    for config, expected in EXPECTED.items():
        assert {k: v for k, v in totals[config].items() if v} == expected, config
    assert frames == 8437 and sum(totals["bounds"].values()) == 17367
    assert sum(totals["orientation"].values()) == 13734 and sum(totals["anatomy"].values()) == 8510
    independent, bounds_rows = _independent_counts(shared_annotations)
    assert {c: dict(v) for c, v in independent.items()} == {c: dict(EXPECTED[c]) for c in EXPECTED}
    assert bounds_rows == frames
    # the duplicated tags are reported, counted once
    assert result.report.counts["duplicate_tag"] == 306  # 304 Orientation + 2 diagnostic_plane
    assert result.report.counts.get("conflicting_tag", 0) == 0


def test_real_build_splits_are_stream_grouped_and_cover_classes(real_build):
    out, _ = real_build
    seen: dict[str, set] = {}
    for config in schema.CONFIGS:
        records = read_labels(out, config).values()
        for record in records:
            seen.setdefault(record["stream"], set()).add(record["split"])
        if config in ("orientation", "anatomy"):
            for split in schema.SPLITS:
                assert {r["label"] for r in records if r["split"] == split} == set(schema.class_names(config)), (config, split)
    assert len(seen) == 34 and all(len(s) == 1 for s in seen.values())


def test_real_build_paper_protocol_within_one_percent(real_build):
    out, _ = real_build
    for config, ratios in schema.PAPER_RATIOS.items():
        counts = Counter(r["paper_split"] for r in read_labels(out, config).values())
        total = sum(counts.values())
        for split, ratio in ratios.items():
            assert abs(counts[split] / total - ratio) < 0.01, (config, counts)
