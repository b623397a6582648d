"""reproduce: stream-clustered intervals, the leakage gap, and the report, end to end on tiny runs."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")

from baselines import paper  # noqa: E402
from baselines.reproduce import Plan, ReproduceConfig, leakage_gap, reproduce, summarise  # noqa: E402
from baselines.stats import accuracy, group_by_stream, interval, seed_mean_distribution  # noqa: E402


def _predictions(streams: dict[str, tuple[int, float]], seed: int) -> list[dict]:
    """Classifier predictions: per stream (frames, share right), the right ones first."""
    out = []
    for stream, (frames, share) in streams.items():
        right = round(frames * share)
        out += [{"image_id": f"{stream}/f{k:03d}", "label": "hdvb" if k < right else "huvf", "truth": "hdvb"}
                for k in range(frames)]
    return out


def _run(predictions: list[dict]) -> tuple[dict, list[dict]]:
    acc = accuracy(predictions)
    return {"metrics": {"accuracy": acc, "macro_f1": acc}}, predictions


def test_stream_bootstrap_is_wider_than_a_frame_bootstrap_when_streams_differ():
    # 10 streams of 50 frames: half the streams all right, half all wrong. Frames within a stream
    # agree completely, so the effective sample is 10 streams, not 500 frames.
    streams = {f"s{k}": (50, 1.0 if k % 2 else 0.0) for k in range(10)}
    grouped = group_by_stream(_predictions(streams, 0))
    low, high = interval(seed_mean_distribution([grouped], accuracy, 400, seed=1))
    frames = np.array([1.0] * 250 + [0.0] * 250)
    rng = np.random.default_rng(1)
    frame_low, frame_high = interval(np.array([rng.choice(frames, 500).mean() for _ in range(400)]))
    assert low < 0.5 < high and frame_low < 0.5 < frame_high
    assert (high - low) > 3 * (frame_high - frame_low)  # 1/sqrt(10) against 1/sqrt(500): ~7x in theory
    # the same draws give the same interval
    assert interval(seed_mean_distribution([grouped], accuracy, 400, seed=1)) == (low, high)


def test_summary_and_leakage_gap():
    leaky = {f"s{k}": (40, 0.95) for k in range(8)}
    honest = {f"t{k}": (40, 0.6 if k % 2 else 0.4) for k in range(8)}
    paper_runs = [_run(_predictions(leaky, s)) for s in range(3)]
    stream_runs = [_run(_predictions(honest, s)) for s in range(3)]
    a, b = summarise(paper_runs, "orientation", 300), summarise(stream_runs, "orientation", 300)
    assert a["accuracy"]["mean"] == pytest.approx(0.95) and a["accuracy"]["sd"] == pytest.approx(0.0)
    assert b["accuracy"]["mean"] == pytest.approx(0.5) and b["test_streams"] == 8 and b["test_frames"] == 320
    gap = leakage_gap(a, b)
    assert gap["gap"] == pytest.approx(0.45) and 0 < gap["interval"][0] < 0.45 < gap["interval"][1]
    same = leakage_gap(b, summarise(stream_runs, "orientation", 300))
    assert same["gap"] == 0 and same["interval"][0] <= 0 <= same["interval"][1]


def test_detector_scores_resample_whole_images_with_their_truth():
    from baselines.stats import detection_map

    classes = ("head", "arms", "legs", "abdomen")
    right = {"image_id": "s1/f0", "boxes": [[10, 10, 50, 50]], "labels": [0], "scores": [0.9],
             "truth": {"boxes": [[10, 10, 50, 50]], "labels": [0]}}
    wrong = {"image_id": "s2/f0", "boxes": [[200, 200, 20, 20]], "labels": [0], "scores": [0.9],
             "truth": {"boxes": [[10, 10, 50, 50]], "labels": [0]}}
    score = detection_map(classes, "mAP50")
    assert score([right]) == pytest.approx(1.0) and score([wrong]) == pytest.approx(0.0)
    assert 0.0 < score([right, wrong]) < 1.0


def test_reproduce_end_to_end_on_tiny_runs(procedural_build, tmp_path):
    tiny = Plan("resnet8", "fasterrcnn_resnet10", "ours", 0.2, 0.3, 1, 2, 48, 24, 30, 0.01, 3, True, 64)
    config = ReproduceConfig(data=str(procedural_build), out=str(tmp_path / "r"), quick=True, seeds=2,
                             tasks=("plane",), bootstrap=60, plans=(tiny,), progress=False)
    report = reproduce(config).read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["results"]) == {f"resnet8/plane/{protocol}" for protocol in ("paper", "stream")}
    for key, result in summary["results"].items():
        runs = [json.loads((tmp_path / "r" / "runs" / f"{key.split('/')[1]}-{key.split('/')[0]}-{key.split('/')[2]}-seed{s}"
                            / "run.json").read_text()) for s in (0, 1)]
        metric = result["headline"]
        assert result[metric]["mean"] == pytest.approx(np.mean([r["metrics"][metric] for r in runs]))
        assert result["interval"][0] <= result["interval"][1]
    # the paper's figures appear exactly as printed, beside ours: Table 4's ResNet8 plane accuracy
    assert "| plane | resnet8 | stream | accuracy % | 99.24% (Table 4) |" in report
    for section in ("Leakage gap", "Per-stream results", "Compression (Tables 2 and 4 layout)", "Transfer (Tables 5–7)",
                    "Stand-in, not FETAL_PLANES_DB", "Quick mode"):
        assert section in report, section
    gap_rows = [line for line in report.splitlines() if re.match(r"\| plane \| resnet8 \| accuracy \|", line)]
    assert len(gap_rows) == 1
    assert paper.paper_tables_markdown() in report
    # a second call reuses the finished runs (no retraining) and writes the same tables
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*/run.json")}
    reproduce(ReproduceConfig(data=str(procedural_build), out=str(tmp_path / "r"), quick=True, seeds=2,
                              tasks=("plane",), bootstrap=60, plans=(tiny,), progress=False))
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*/run.json")}


def test_quickstart_path_and_held_out_scoring(shared_annotations, tmp_path, monkeypatch):
    """The quickstart's path end to end (procedural training set -> train -> `<out>/<task>` bundle), then
    scored on renders of real annotation streams it never saw: one horizontal and one vertical sweep.
    Whether the full quickstart beats chance is measured by benchmarks/bench_quickstart.py: a probe model
    trained for the seconds a test can afford does not reliably (0.41 in one run)."""
    from baselines import quickstart as qs
    from baselines.heldout import score_bundle
    from fpus23_dataset.synth import render_annotations

    monkeypatch.setattr(qs, "TRAINING_SET", {"streams": 160, "frames_per_stream": 3, "plane_images": 8})
    monkeypatch.setitem(qs.QUICKSTART, "probe", qs.QuickRecipe("resnet8", 0.25, 40, 16, 1e-3, eval_subset=48))
    qs.quickstart(tmp_path / "bundles", tasks=["probe"], progress=False)
    assert (tmp_path / "bundles" / "probe" / "bundle.json").is_file()
    streams = ["stream_hdvf_aroundhead_h", "stream_huvb_aroundlegs_v"]
    render_annotations(shared_annotations, tmp_path / "real", streams=streams, workers=2, progress=False)
    score = score_bundle(tmp_path / "bundles" / "probe", tmp_path / "real", streams, every=12)
    assert score["frames"] >= 40 and score["chance"] == 0.5 and set(score["per_stream"]) == set(streams)
    # the overall accuracy is the frame-weighted mean of the per-stream ones, each against the real tag
    counts = {s: len(range(0, n, 12)) for s, n in (("stream_hdvf_aroundhead_h", 349), ("stream_huvb_aroundlegs_v", 248))}
    assert sum(counts.values()) == score["frames"]
    assert score["accuracy"] == pytest.approx(sum(score["per_stream"][s] * n for s, n in counts.items()) / score["frames"], abs=1e-3)
