from __future__ import annotations

import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from unittest import mock

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fpus23_dataset import load, schema
from fpus23_dataset.build import BuildError, build, pipeline
from fpus23_dataset.build.features import features_for
from fpus23_dataset.cli import main
from fpus23_dataset.release.tables import iter_batches, read_labels, shard_files

from helpers import LOCATION, ORIENT, PROBE, box, export, image, tag, write, write_png


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_rebuild_is_byte_identical(procedural_source, procedural_build, tmp_path):
    again = tmp_path / "again"
    build(procedural_source, again, "1.2.3", progress=False, workers=1)  # one process or several: same bytes
    first, second = _tree(procedural_build), _tree(again)
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first)
    assert any(name.endswith(".parquet") for name in first) and "README.md" in first


def test_failure_leaves_no_partial_output_and_keeps_the_earlier_build(procedural_source, procedural_build, tmp_path):
    fresh = tmp_path / "fresh"
    with mock.patch.object(pipeline, "render_card", side_effect=RuntimeError("injected")):
        with pytest.raises(RuntimeError, match="injected"):
            build(procedural_source, fresh, "1.2.3", progress=False)
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind

    earlier = tmp_path / "earlier"
    shutil.copytree(procedural_build, earlier)
    before = _tree(earlier)
    # The failure happens in a writer process, as a full disk would; it must still reach the caller.
    with mock.patch.object(pq.ParquetWriter, "write_table", side_effect=OSError("disk full")):
        with pytest.raises(OSError, match="disk full"):
            build(procedural_source, earlier, "9.9.9", progress=False, workers=2)
    assert _tree(earlier) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]


def test_each_config_file_holds_its_own_rows_and_describes_itself(procedural_build):
    """What the Hub viewer and any Parquet reader see: a config's data files, read with plain pyarrow."""
    metadata = yaml.safe_load((procedural_build / "README.md").read_text().split("---")[1])
    assert [c["config_name"] for c in metadata["configs"]] == list(schema.CONFIGS)
    for entry, info in zip(metadata["configs"], metadata["dataset_info"]):
        config = entry["config_name"]
        assert info["config_name"] == config
        for data_files in entry["data_files"]:
            files = sorted(procedural_build.glob(data_files["path"]))
            assert files and all(f.parent.name == config for f in files)
            table = pq.read_table(files)
            expected = next(s["num_examples"] for s in info["splits"] if s["name"] == data_files["split"])
            assert table.num_rows == expected
            declared = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
            assert declared == features_for(config).to_dict()  # class names travel with every file
            frame = table.drop_columns(["image"]).to_pandas()
            assert list(frame.columns) == [c for c in features_for(config) if c != "image"]
            for column in frame.columns:
                if column != "probe":
                    assert not frame[column].isna().any(), (config, column)
            if config != "bounds":
                assert str(frame["label"].dtype) == "int64"
                assert set(frame["label"]) <= set(range(len(schema.class_names(config))))
            for file in files:
                parquet = pq.ParquetFile(file)
                cdc = json.loads(parquet.metadata.metadata[b"content_defined_chunking"])
                assert cdc == datasets.config.DEFAULT_CDC_OPTIONS
                group = parquet.metadata.row_group(0)
                columns = {group.column(k).path_in_schema: group.column(k) for k in range(group.num_columns)}
                assert columns["image.bytes"].compression == "UNCOMPRESSED" and not columns["image.bytes"].has_dictionary_page
                assert columns["image_id"].statistics.has_min_max and columns["image_id"].has_column_index
                assert all(c.has_offset_index for c in columns.values())
                assert os.stat(file).st_mode & 0o111 == 0  # a data file, not executable


def test_shards_and_row_groups_are_bounded(procedural_source, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", "1MB")
    result = build(procedural_source, tmp_path / "out", "1.0.0", progress=False, max_shard_bytes=3_000_000, workers=2)
    files = shard_files(tmp_path / "out", "orientation")["train"]
    assert len(files) > 2 and files[0].name == f"train-00000-of-{len(files):05d}.parquet"
    assert max(pq.ParquetFile(file).metadata.num_row_groups for file in files) >= 2
    for file in files:
        parquet = pq.ParquetFile(file)
        for k in range(parquet.metadata.num_row_groups):
            images = parquet.read_row_group(k, columns=["image"]).column("image").combine_chunks().field("bytes")
            assert sum(len(b) for b in images.to_pylist()) <= 1_000_000
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == result.counts["orientation"]["train"].total()


def test_refuses_to_replace_a_folder_that_is_not_a_build(procedural_source, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="not an earlier output"):
        build(procedural_source, precious, "1.0.0", progress=False)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        build(procedural_source, tmp_path / "a-file", "1.0.0", progress=False)
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
        for batch in iter_batches(files, ["image_id", "image"]):
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
    from fpus23_dataset.release.diff import diff_builds

    changes = diff_builds(tmp_path / "v1", tmp_path / "v2")
    assert changes["orientation"]["added"] == ["stream_a/frame_000003"]
    assert changes["orientation"]["relabelled"] == [("stream_a/frame_000002", "hdvb", "huvf")]
    assert changes["bounds"]["added"] == ["stream_a/frame_000003"]
    assert changes["orientation"]["removed"] == []
    assert main(["diff", str(tmp_path / "v2"), str(tmp_path / "v1")]) == 0


def test_publish_calls_the_hub_client(procedural_build):
    from fpus23_dataset.release.publish import PublishError, publish

    api = mock.Mock()
    api.upload_folder.return_value = mock.Mock(commit_url="https://hub.example/commit/abc")
    url = publish(procedural_build, "org/fpus23", "v1.2.3", api=api)
    assert url == "https://hub.example/commit/abc"
    api.create_repo.assert_called_once_with("org/fpus23", repo_type="dataset", private=False, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(procedural_build) and kwargs["repo_type"] == "dataset"
    api.create_tag.assert_called_once()
    assert api.create_tag.call_args.kwargs["tag"] == "v1.2.3"
    with pytest.raises(PublishError, match="does not match"):
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


def test_a_subset_of_configs_gives_the_same_files_as_the_full_build(procedural_source, procedural_build, tmp_path):
    out = tmp_path / "bounds-only"
    assert main(["build", str(procedural_source), "--out", str(out), "--version", "1.2.3", "--configs", "bounds", "--quiet"]) == 0
    ours, full = _tree(out), _tree(procedural_build)
    bounds_files = [name for name in full if name.startswith("bounds/")]
    assert bounds_files and sorted(n for n in ours if n.endswith(".parquet")) == bounds_files
    assert all(ours[name] == full[name] for name in bounds_files)  # same rows, splits and object ids, byte for byte
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
    from fpus23_dataset.build import images

    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", small.stat().st_size + 10)
    result = build(src, tmp_path / "out", "0.0.1", progress=False)
    assert result.report.counts["corrupt_image"] == 1
    issue = next(i for i in result.report.issues if i.code == "corrupt_image")
    assert issue.frame == "stream_a/frame_000001" and "over" in issue.message
    assert sorted(read_labels(tmp_path / "out", "orientation")) == ["stream_a/frame_000000"]


def _truncated_export_source(tmp_path: Path) -> Path:
    """Two streams in the archive layout; the boxes export of one is cut mid-file, after complete <image> elements."""
    src = tmp_path / "src"
    for stream in ("stream_a", "stream_b"):
        frames = []
        for i in range(6):
            write_png(src / "four_poses" / stream / f"frame_{i:06d}.png", seed=i)
            frames.append(image(f"frame_{i:06d}.png", tag(*ORIENT, "hdvb"), box("head", 10, 10, 90, 90), id_=i))
        text = export(*frames)
        write(src / "annos" / "annotation" / stream / "annotations.xml", text.replace(box("head", 10, 10, 90, 90), ""))
        write(src / "boxes" / "annotation" / stream / "annotations.xml", text[: len(text) * 2 // 3] if stream == "stream_b" else text)
    return src


def test_a_truncated_export_fails_the_build_unless_keep_going(tmp_path, capsys):
    src = _truncated_export_source(tmp_path)
    with pytest.raises(BuildError, match="cannot be read whole") as failure:
        build(src, tmp_path / "out", "1.0.0", progress=False)
    assert "stream_b" in str(failure.value) and "malformed_xml" in str(failure.value)
    assert not (tmp_path / "out").exists()
    assert main(["build", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()

    assert main(["build", str(src), "--out", str(tmp_path / "out"), "--quiet", "--keep-going"]) == 0
    for config in ("orientation", "bounds"):  # none of the cut stream's frames, not even those before the cut
        assert {r["stream"] for r in read_labels(tmp_path / "out", config).values()} == {"stream_a"}
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())["report"]
    assert list(report["omitted_streams"]) == ["stream_b"]
    assert "unannotated_image" not in report["counts"]  # its images are not listed as stray files either
    assert "`stream_b`" in (tmp_path / "out" / "README.md").read_text()


def test_a_source_of_one_or_two_streams_still_has_a_train_split(tmp_path):
    src = tmp_path / "src"
    for stream in ("stream_a", "stream_b"):
        write_png(src / stream / "frame_000000.png")
        write(src / stream / "annotations.xml", export(image("frame_000000.png", tag(*ORIENT, "hdvb"))))
    build(src / "stream_a" / "annotations.xml", tmp_path / "one", "1.0.0", progress=False)
    assert {r["split"] for r in read_labels(tmp_path / "one", "orientation").values()} == {"train"}
    build(src, tmp_path / "two", "1.0.0", progress=False)
    assert "train" in {r["split"] for r in read_labels(tmp_path / "two", "orientation").values()}
