from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from PIL import Image

from fpus23_dataset import build as build_module
from fpus23_dataset import image_reader, writing
from fpus23_dataset import load, schema
from fpus23_dataset.build import BuildError, build
from fpus23_dataset.cli import main
from fpus23_dataset.tables import iter_batches, read_labels, shard_files

from helpers import LOCATION, ORIENT, PROBE, box, export, image, tag, write, write_png


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_rebuild_is_byte_identical(procedural_source, procedural_build, tmp_path):
    again = tmp_path / "again"
    build(procedural_source, again, "1.2.3", progress=False)
    first, second = _tree(procedural_build), _tree(again)
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first)
    assert any(name.endswith(".parquet") for name in first) and "README.md" in first


def test_failure_leaves_no_partial_output_and_keeps_the_earlier_build(procedural_source, procedural_build, tmp_path):
    fresh = tmp_path / "fresh"
    with mock.patch.object(writing, "render_card", side_effect=RuntimeError("injected")):
        with pytest.raises(RuntimeError, match="injected"):
            build(procedural_source, fresh, "1.2.3", progress=False)
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind

    earlier = tmp_path / "earlier"
    shutil.copytree(procedural_build, earlier)
    before = _tree(earlier)
    # The failure happens in a writer thread, as a full disk would; it must still reach the caller.
    with mock.patch.object(pq.ParquetWriter, "write_table", side_effect=OSError("disk full")):
        with pytest.raises(OSError, match="disk full"):
            build(procedural_source, earlier, "9.9.9", progress=False)
    assert _tree(earlier) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]


def test_each_image_is_stored_once_and_the_reader_does_not_change_the_output(procedural_source, tmp_path, monkeypatch):
    """Small row groups and shards, frames dropped mid-batch; images read by a thread or by a child process."""
    source = tmp_path / "src"
    shutil.copytree(procedural_source, source)
    pngs = sorted(source.glob("four_poses/*/*.png"))
    for victim in (pngs[5], pngs[40]):  # one flipped byte in the image data: a CRC failure
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    monkeypatch.setattr(writing, "READ_BATCH", 4)
    monkeypatch.setattr(writing, "DATA_PAGE_BYTES", 30_000)
    outputs = []
    readers = []
    opened = build_module.open_image_reader
    monkeypatch.setattr(build_module, "open_image_reader", lambda *a, **k: readers.append(opened(*a, **k)) or readers[-1])
    for in_process in (False, True):
        monkeypatch.setattr(build_module, "READ_IN_PROCESS", in_process)
        outputs.append(tmp_path / f"out-{in_process}")
        result = build(source, outputs[-1], "1.0.0", progress=False, max_shard_bytes=600_000)
        assert result.report.counts["corrupt_image"] == 2
    assert [type(r).__name__ for r in readers] == ["ThreadImageReader", "ProcessImageReader"]
    assert _tree(outputs[0]) == _tree(outputs[1])
    files = sorted((outputs[1] / "data").glob("train-*.parquet"))
    assert len(files) > 2
    rows_per_config: Counter = Counter()
    shared = 0  # rows that reuse an image stored for another config's row
    for file in files:
        parquet = pq.ParquetFile(file)
        image_column = parquet.schema_arrow.get_field_index("image")
        bytes_column = next(k for k in range(parquet.metadata.num_columns) if parquet.metadata.row_group(0).column(k).path_in_schema == "image.bytes")
        assert image_column == 1
        for k in range(parquet.metadata.num_row_groups):
            table = parquet.read_row_group(k, columns=["config", "image_id", "image"])
            rows_per_config.update(table.column("config").to_pylist())
            frames = set(table.column("image_id").to_pylist())
            assert len(frames) <= 4
            shared += table.num_rows - len(frames)
            chunk = parquet.metadata.row_group(k).column(bytes_column)
            assert chunk.has_dictionary_page
            sizes = {r["image_id"]: len(r["image"]["bytes"]) for r in table.to_pylist()}
            stored, once = chunk.total_uncompressed_size, sum(sizes.values())
            assert once <= stored < once + 100 * table.num_rows + 1000  # each image once, not once per row
    assert shared > 50
    ids = set(read_labels(outputs[1], "orientation"))
    assert f"{pngs[5].parent.name}/{pngs[5].stem}" not in ids and f"{pngs[40].parent.name}/{pngs[40].stem}" not in ids
    assert len(ids) == sum(result.counts["orientation"][s].total() for s in result.counts["orientation"])
    assert rows_per_config["orientation"] == result.counts["orientation"]["train"].total()
    assert rows_per_config["bounds"] == result.counts["bounds"]["train"]["__rows__"]


def test_refuses_to_replace_a_folder_that_is_not_a_build(procedural_source, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(BuildError, match="not an fpus23 build"):
        build(procedural_source, precious, "1.0.0", progress=False)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    with pytest.raises(BuildError, match="X.Y.Z"):
        build(procedural_source, tmp_path / "x", "v1", progress=False)


def test_no_stream_in_two_splits_for_any_config(procedural_build):
    split_of_stream: dict[str, set] = {}
    for config in schema.CONFIGS:
        for record in read_labels(procedural_build, config).values():
            split_of_stream.setdefault(record["stream"], set()).add(record["split"])
    assert split_of_stream and all(len(splits) == 1 for splits in split_of_stream.values())


def test_every_class_in_every_split_where_the_data_allows(procedural_build):
    for config in ("orientation", "anatomy", "plane"):
        records = read_labels(procedural_build, config).values()
        per_split = {s: {r["label"] for r in records if r["split"] == s} for s in schema.SPLITS}
        assert all(per_split[s] == set(schema.class_names(config)) for s in schema.SPLITS), (config, per_split)


def test_hugging_face_load_keeps_features_and_bytes(procedural_source, procedural_build):
    from datasets import load_dataset

    bounds = load_dataset(str(procedural_build), "bounds")
    features = bounds["train"].features
    assert features["objects"].feature["category"].names == list(schema.BOX_CATEGORIES)
    assert features["probe"].names == ["h", "v"]
    row = bounds["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (672, 389)
    stream, frame_name = row["image_id"].split("/")
    assert row["stream"] == stream
    source_png = procedural_source / "four_poses" / stream / f"{frame_name}.png"
    raw = bounds["train"].cast_column("image", bounds["train"].features["image"].__class__(decode=False))[0]["image"]["bytes"]
    assert raw == source_png.read_bytes()  # copied as is, never re-encoded
    for obj in row["objects"]:
        x, y, w, h = obj["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 672 and y + h <= 389
        assert obj["area"] == pytest.approx(w * h, rel=1e-3)
    orientation = load_dataset(str(procedural_build), "orientation")
    assert orientation["test"].features["label"].names == list(schema.ORIENTATION.classes)
    ids = [i for split in orientation.values() for i in split["image_id"]]
    assert len(ids) == len(set(ids))


def test_load_with_both_protocols(procedural_build):
    stream = load("anatomy", path=procedural_build)
    paper = load("anatomy", protocol="paper", path=procedural_build)
    assert set(stream) == set(paper) == {"train", "validation", "test"}
    total = sum(len(d) for d in stream.values())
    assert sum(len(d) for d in paper.values()) == total
    for split, dataset in paper.items():
        assert set(dataset["paper_split"]) == {split}
    bounds_paper = load("bounds", protocol="paper", path=procedural_build)
    assert set(bounds_paper) == {"train", "validation"}
    with pytest.raises(ValueError, match="protocol"):
        load("anatomy", protocol="random", path=procedural_build)


def test_builder_accepts_any_png_mode_and_reports_bad_input(tmp_path):
    src = tmp_path / "src"
    frames = []
    for i, mode in enumerate(["L", "RGB", "RGBA"]):
        name = f"frame_{i:06d}.png"
        write_png(src / "stream_a" / name, mode=mode, seed=i)
        frames.append(image(name, tag(*ORIENT, "hdvb"), tag(*PROBE, "v"), box("head", 10, 10, 90, 90)))
    # bad inputs, each alongside good frames
    write_png(src / "stream_a" / "frame_000010.png")
    frames.append(image("frame_000010.png", tag(*ORIENT, "hdvf"), box("head", -20, -10, 50, 60), box("legs", 700, 10, 800, 90)))
    (src / "stream_a" / "frame_000011.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    frames.append(image("frame_000011.png", tag(*ORIENT, "hdvb")))
    frames.append(image("frame_000012.png", tag(*ORIENT, "hdvb")))  # no file
    write_png(src / "stream_a" / "frame_000013.png")
    frames.append(image("frame_000013.png", tag(*ORIENT, "hdvb"), tag(*ORIENT, "huvb"), tag(*LOCATION, "legs"), box("tail", 1, 1, 5, 5), box("arm", 5, 5, 5, 9)))
    write(src / "stream_a" / "annotations.xml", export(*frames))
    out = tmp_path / "out"
    result = build(src, out, "0.0.1", progress=False)
    counts = result.report.counts
    assert counts["box_clipped"] == 1 and counts["box_outside"] == 1 and counts["corrupt_image"] == 1
    assert counts["missing_image"] == 1 and counts["conflicting_tag"] == 1 and counts["unknown_label"] == 1
    assert counts["degenerate_box"] == 1
    orientation = read_labels(out, "orientation")
    assert sorted(orientation) == ["stream_a/frame_000000", "stream_a/frame_000001", "stream_a/frame_000002", "stream_a/frame_000010"]
    assert read_labels(out, "anatomy")["stream_a/frame_000013"]["label"] == "legs"
    clipped = read_labels(out, "bounds")["stream_a/frame_000010"]["objects"]
    assert [(o["category"], o["bbox"]) for o in clipped] == [("head", [0.0, 0.0, 50.0, 60.0])]
    report = json.loads((out / "build_report.json").read_text())["report"]
    assert report["excluded"]["orientation"] == {"conflicting_tag": 1, "corrupt_image": 1, "missing_image": 1}
    messages = {i["code"]: i for i in report["issues"]}
    assert messages["corrupt_image"]["file"] == "stream_a/frame_000011.png"
    assert messages["missing_image"]["frame"] == "stream_a/frame_000012"
    card = (out / "README.md").read_text()
    assert "`corrupt_image` | 1" in card and "version 0.0.1" in card
    stored = {}
    for files in shard_files(out, "orientation").values():
        for batch in iter_batches(files, "orientation", ["image_id", "image"]):
            for record in batch.to_pylist():
                stored[record["image_id"]] = Image.open(io.BytesIO(record["image"]["bytes"])).mode
    assert [stored[f"stream_a/frame_{i:06d}"] for i in range(3)] == ["L", "RGB", "RGBA"]


def test_nothing_usable_fails_cleanly(tmp_path):
    write(tmp_path / "src" / "stream_a" / "annotations.xml", export(image("frame_000000.png", tag(*ORIENT, "hdvb"))))
    with pytest.raises(BuildError, match="nothing usable"):
        build(tmp_path / "src", tmp_path / "out", "1.0.0", progress=False)
    assert not (tmp_path / "out").exists()


def test_paper_protocol_proportions(procedural_build):
    for config, ratios in schema.PAPER_RATIOS.items():
        records = read_labels(procedural_build, config).values()
        counts = Counter(r["paper_split"] for r in records)
        total = sum(counts.values())
        for split, ratio in ratios.items():
            assert abs(counts[split] / total - ratio) <= max(0.01, 1 / total), (config, counts)


def test_diff_lists_added_removed_and_relabelled(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_png(src / "stream_a" / f"frame_{i:06d}.png", seed=i)
    def export_with(pose_of_2, boxes_of_3, n):
        return export(*[
            image(f"frame_{i:06d}.png", tag(*ORIENT, pose_of_2 if i == 2 else "hdvb"), *(boxes_of_3 if i == 3 else []))
            for i in range(n)
        ])
    write(src / "stream_a" / "annotations.xml", export_with("hdvb", [box("head", 1, 1, 50, 50)], 3))
    build(src, tmp_path / "v1", "1.0.0", progress=False)
    write(src / "stream_a" / "annotations.xml", export_with("huvf", [box("head", 1, 1, 50, 50)], 4))
    build(src, tmp_path / "v2", "1.1.0", progress=False)
    from fpus23_dataset.diff import diff_builds

    changes = diff_builds(tmp_path / "v1", tmp_path / "v2")
    assert changes["orientation"]["added"] == ["stream_a/frame_000003"]
    assert changes["orientation"]["relabelled"] == [("stream_a/frame_000002", "hdvb", "huvf")]
    assert changes["bounds"]["added"] == ["stream_a/frame_000003"]
    assert changes["orientation"]["removed"] == []
    assert main(["diff", str(tmp_path / "v2"), str(tmp_path / "v1")]) == 0


def test_publish_calls_the_hub_client(procedural_build):
    from fpus23_dataset.publish import publish

    api = mock.Mock()
    api.upload_folder.return_value = mock.Mock(commit_url="https://hub.example/commit/abc")
    url = publish(procedural_build, "org/fpus23", "v1.2.3", api=api)
    assert url == "https://hub.example/commit/abc"
    api.create_repo.assert_called_once_with("org/fpus23", repo_type="dataset", private=False, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(procedural_build) and kwargs["repo_type"] == "dataset"
    api.create_tag.assert_called_once()
    assert api.create_tag.call_args.kwargs["tag"] == "v1.2.3"
    with pytest.raises(ValueError, match="does not match"):
        publish(procedural_build, "org/fpus23", "v2.0.0", api=mock.Mock())
    with mock.patch("huggingface_hub.HfApi") as hf_api:
        hf_api.return_value.upload_folder.return_value = mock.Mock(commit_url="u")
        assert main(["publish", str(procedural_build), "--repo-id", "org/x", "--tag", "v1.2.3"]) == 0
        hf_api.return_value.create_tag.assert_called_once()


def test_coco_export_loads_in_pycocotools(procedural_build, tmp_path):
    from pycocotools.coco import COCO

    assert main(["export", str(procedural_build), str(tmp_path / "coco"), "--config", "bounds", "--format", "coco"]) == 0
    labels = read_labels(procedural_build, "bounds")
    for split in ("train", "validation", "test"):
        coco = COCO(str(tmp_path / "coco" / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(schema.BOX_CATEGORIES)
        assert min(coco.getCatIds()) == 1
        records = [r for r in labels.values() if r["split"] == split]
        assert len(coco.getImgIds()) == len(records)
        assert len(coco.getAnnIds()) == sum(len(r["objects"]) for r in records)
        first = coco.loadImgs(coco.getImgIds()[0])[0]
        assert (tmp_path / "coco" / "images" / first["file_name"]).is_file()
        ann = coco.loadAnns(coco.getAnnIds(imgIds=[first["id"]]))[0]
        expected = next(o for o in labels[first["fpus23_image_id"]]["objects"] if o["id"] == ann["id"])
        assert ann["bbox"] == pytest.approx(expected["bbox"]) and ann["category_id"] == schema.BOX_CATEGORIES.index(expected["category"]) + 1


def test_stats_cli(procedural_build, capsys, tmp_path):
    assert main(["stats", str(procedural_build), "--plot", str(tmp_path / "counts.png")]) == 0
    with Image.open(tmp_path / "counts.png") as plot:
        assert plot.size[0] > 1000
    out = capsys.readouterr().out
    for config in schema.CONFIGS:
        assert out.count(config) >= 1
    assert "no_plane" in out and "(frames)" in out


def test_the_builder_does_not_import_datasets():
    """`datasets` (with pandas) costs about a second to import, a quarter of a full 34-stream build; the builder needs neither."""
    import subprocess
    import sys

    code = "import sys, fpus23_dataset.build, fpus23_dataset.writing; print('datasets' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_a_subset_of_configs_gives_the_same_rows_as_the_full_build(procedural_source, procedural_build, tmp_path):
    out = tmp_path / "bounds-only"
    assert main(["build", str(procedural_source), "--out", str(out), "--version", "1.2.3", "--configs", "bounds", "--quiet"]) == 0
    assert read_labels(out, "bounds") == read_labels(procedural_build, "bounds")  # same splits and object ids
    subset_files, full_files = shard_files(out, "bounds"), shard_files(procedural_build, "bounds")
    for split, files in subset_files.items():
        stored = pq.read_table(files, columns=["config"]).column("config").unique().to_pylist()
        assert stored == ["bounds"]
        ours = [b.to_pylist() for b in iter_batches(files, "bounds", ["image_id", "image"])]
        theirs = [b.to_pylist() for b in iter_batches(full_files[split], "bounds", ["image_id", "image"])]
        assert sum(ours, []) == sum(theirs, [])
    assert read_labels(out, "orientation") == {}
    card = (out / "README.md").read_text()
    assert "config_name: bounds" in card and "config_name: orientation" not in card
    with pytest.raises(BuildError, match="choose among"):
        build(procedural_source, tmp_path / "x", "1.0.0", progress=False, configs=["boxes"])


def test_an_oversized_image_file_is_reported_not_read(tmp_path, monkeypatch):
    src = tmp_path / "src"
    small = write_png(src / "stream_a" / "frame_000000.png", size=(64, 48), seed=1)
    write_png(src / "stream_a" / "frame_000001.png", size=(672, 389), seed=2)
    write(src / "stream_a" / "annotations.xml", export(
        image("frame_000000.png", tag(*ORIENT, "hdvb"), width=64, height=48),
        image("frame_000001.png", tag(*ORIENT, "hdvf")),
    ))
    monkeypatch.setattr(image_reader, "MAX_IMAGE_BYTES", small.stat().st_size + 10)
    result = build(src, tmp_path / "out", "0.0.1", progress=False)
    assert result.report.counts["corrupt_image"] == 1
    issue = next(i for i in result.report.issues if i.code == "corrupt_image")
    assert issue.frame == "stream_a/frame_000001" and "over" in issue.message
    assert sorted(read_labels(tmp_path / "out", "orientation")) == ["stream_a/frame_000000"]


def test_row_group_rows_store_each_used_image_once_with_its_rows_pointing_to_it():
    """Rows of a row group, column by column: images no row uses (frames dropped after the read) are not stored."""
    import pyarrow as pa

    from fpus23_dataset.cvat import Box, Frame
    from fpus23_dataset.features import stored_arrow_schema
    from fpus23_dataset.row_group import RowGroupRows

    def frame(k):
        return Frame("s", f"frame_{k}.png", k, width=672, height=389, labels={"orientation": "huvb", "probe": "v"},
                     boxes=[Box("legs", 1.004, 2.0, 3.0, 4.0)] if k % 2 else [])

    rows = RowGroupRows()
    ids = iter(range(7, 100)).__next__
    for position in (0, 2, 5):
        rows.add_frame(position, frame(position), [("orientation", "train")] + [("bounds", "test")] * (position % 2), ids)
    table, stored, indices = rows.table(stored_arrow_schema(), lambda ks: pa.array([b"x%d" % k for k in ks]))
    assert stored == [0, 2, 5]
    assert indices == [0, 1, 2, 2] and table.column("image").chunk(0).field("bytes").to_pylist() == [b"x0", b"x1", b"x2", b"x2"]
    assert table.column("config").to_pylist() == ["orientation", "orientation", "orientation", "bounds"]
    assert table.column("label").to_pylist() == [schema.ORIENTATION.classes.index("huvb")] * 3 + [None]
    assert table.column("probe").to_pylist() == [schema.PROBE.classes.index("v")] * 4
    assert table.column("objects").to_pylist() == [None, None, None, [
        {"id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "category": schema.BOX_CATEGORIES.index("legs"), "area": 12.0}]]
    assert [r["path"] for r in table.column("image").to_pylist()] == ["s/frame_0.png", "s/frame_2.png", "s/frame_5.png", "s/frame_5.png"]
    assert table.schema == stored_arrow_schema()


def test_builds_in_the_earlier_layout_still_diff_and_count(procedural_build, tmp_path):
    """fpus23 0.1 wrote a folder per config (`<config>/<split>-*.parquet`, no config column)."""
    import pyarrow as pa

    from fpus23_dataset.diff import diff_builds
    from fpus23_dataset.features import arrow_schema, config_columns
    from fpus23_dataset.tables import class_counts

    legacy = tmp_path / "legacy"
    for config in schema.CONFIGS:
        for split, files in shard_files(procedural_build, config).items():
            batches = list(iter_batches(files, config, config_columns(config)))
            if not batches:
                continue
            table = pa.Table.from_batches(batches).cast(arrow_schema(config))  # the config's own features
            (legacy / config).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, legacy / config / f"{split}-00000-of-00001.parquet")
    (legacy / "README.md").write_text("legacy")
    assert class_counts(legacy) == class_counts(procedural_build)
    changes = diff_builds(legacy, procedural_build)
    assert all(not kinds[k] for kinds in changes.values() for k in kinds)
    assert main(["export", str(legacy), str(tmp_path / "coco"), "--config", "bounds", "--format", "coco"]) == 0
    with pytest.raises(FileNotFoundError, match="not an fpus23 build"):
        class_counts(tmp_path / "nothing")
    assert main(["stats", str(tmp_path / "nothing")]) == 1


def test_a_write_failing_while_the_reader_waits_for_a_slot_is_raised_not_a_hang(procedural_source, tmp_path):
    """A batch whose write failed never gives its read slot back; the build must stop, not wait for it."""
    import subprocess
    import sys

    code = f"""
import sys
from fpus23_dataset import build as b, image_reader, writing
from fpus23_dataset.parquet_images import ImageParquetWriter
image_reader.SLOTS, writing.READ_BATCH = 2, 4
real, calls = ImageParquetWriter.write_row_group, []
def flaky(self, *args, **kwargs):
    calls.append(1)
    if len(calls) >= 3:
        raise OSError("disk full")
    return real(self, *args, **kwargs)
ImageParquetWriter.write_row_group = flaky
try:
    b.build({str(procedural_source)!r}, {str(tmp_path / "out")!r}, "1.0.0", progress=False)
except OSError as error:
    print("raised", error, type(b.open_image_reader(1 << 20)).__name__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["raised", "disk", "full", "ProcessImageReader"], done.stderr[-2000:]
    assert not (tmp_path / "out").exists()
