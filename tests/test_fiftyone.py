"""Real FiftyOne with its own mongod, in a temporary database folder."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpus23_dataset import schema
from fpus23_dataset.fiftyone import configure
from fpus23_dataset.release.tables import read_labels

from browser import Chromium

ARTIFACTS = Path(os.environ.get("FPUS23_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    configure(tmp_path_factory.mktemp("fiftyone-db"))
    return pytest.importorskip("fiftyone", reason="needs the [fiftyone] extra")


@pytest.fixture(scope="module")
def loaded(fo, procedural_build, tmp_path_factory):
    from fpus23_dataset.fiftyone import load_into_fiftyone

    cache = tmp_path_factory.mktemp("fo-cache")
    dataset = load_into_fiftyone(procedural_build, name="fpus23-test", cache_dir=cache, progress=False)
    return dataset, cache


def test_one_sample_per_frame_with_fields_and_tags(loaded, procedural_build):
    dataset, cache = loaded
    per_config = {c: read_labels(procedural_build, c) for c in schema.CONFIGS}
    frames = set().union(*per_config.values())
    assert len(dataset) == len(frames)
    schema_fields = dataset.get_field_schema()
    for field in ("image_id", "stream", "frame", "probe", "orientation", "anatomy", "plane", "ground_truth"):
        assert field in schema_fields, field
    for image_id in sorted(frames)[:40]:
        sample = dataset.one({"image_id": image_id}) if hasattr(dataset, "one") else dataset.match({"image_id": image_id}).first()
        assert Path(sample.filepath).is_file() and str(cache) in sample.filepath
        for config in ("orientation", "anatomy", "plane"):
            record = per_config[config].get(image_id)
            assert (sample[config].label if sample[config] else None) == (record["label"] if record else None)
            if record:
                assert f"stream:{record['split']}" in sample.tags and f"paper-{config}:{record['paper_split']}" in sample.tags
        record = per_config["bounds"].get(image_id)
        if record:
            detections = sample.ground_truth.detections
            assert len(detections) == len(record["objects"])
            for detection, obj in zip(detections, record["objects"]):
                x, y, w, h = obj["bbox"]
                assert detection.label == obj["category"]
                assert detection.bounding_box == pytest.approx([x / 672, y / 389, w / 672, h / 389], abs=1e-9)


def test_reloading_the_same_name_updates_instead_of_duplicating(loaded, procedural_build):
    from fpus23_dataset.fiftyone import load_into_fiftyone

    dataset, cache = loaded
    before, boxes = len(dataset), dataset.count("ground_truth.detections")
    again = load_into_fiftyone(procedural_build, name="fpus23-test", cache_dir=cache, progress=False)
    assert len(again) == before and len(set(again.values("image_id"))) == before
    assert again.count("ground_truth.detections") == boxes  # each frame's boxes once, not appended again
    assert again.persistent


class ShiftedTruth:
    """A deterministic 'model': ground truth with every third box shifted and every fifth dropped."""

    task = "bounds"

    def __init__(self, truth_by_size):
        self.queue = list(truth_by_size)

    def predict(self, images):
        out = []
        for _ in images:
            boxes = self.queue.pop(0)
            kept = []
            for k, (label, (x, y, w, h)) in enumerate(boxes):
                if k % 5 == 4:
                    continue
                if k % 3 == 2:
                    x, y = x + 0.35 * w, y + 0.2 * h
                kept.append((label, [x, y, w, h], 0.9 - 0.01 * k))
            out.append({"labels": [b[0] for b in kept], "boxes": [b[1] for b in kept], "scores": [b[2] for b in kept]})
        return out


def test_fiftyone_coco_map_agrees_with_pycocotools(loaded):
    from baselines.coco_eval import coco_metrics
    from fpus23_dataset.fiftyone import add_predictions, evaluate

    dataset, _ = loaded
    view = dataset.exists("ground_truth")
    truth = []
    for sample in view.select_fields(["ground_truth", "metadata"]):
        w, h = sample.metadata.width, sample.metadata.height
        truth.append([(d.label, [d.bounding_box[0] * w, d.bounding_box[1] * h, d.bounding_box[2] * w, d.bounding_box[3] * h])
                      for d in sample.ground_truth.detections])
    predictor = ShiftedTruth(truth)
    add_predictions(view, {"bounds": predictor}, progress=False)
    results = evaluate(view, ["bounds"], print_report=False)
    predicted = ShiftedTruth(truth).predict([None] * len(truth))
    ours = coco_metrics(
        [{"boxes": [b for _, b in t], "labels": [schema.BOX_CATEGORIES.index(lb) for lb, _ in t], "width": 672, "height": 389}
         for t in truth],
        [{"boxes": p["boxes"], "labels": [schema.BOX_CATEGORIES.index(lb) for lb in p["labels"]], "scores": p["scores"]}
         for p in predicted],
        schema.BOX_CATEGORIES,
    )
    assert 0.3 < ours["mAP"] < 0.95  # the outcome is known to be imperfect
    assert results["bounds"]["mAP"] == pytest.approx(ours["mAP"], abs=0.01)
    assert dataset.has_evaluation("eval") and "eval_tp" in dataset.get_field_schema()


def test_classification_predictions_are_evaluated(loaded):
    from fpus23_dataset.fiftyone import add_predictions, evaluate

    dataset, _ = loaded

    class Constant:
        def predict(self, images):
            return [{"label": "hdvb", "score": 0.7} for _ in images]

    view = dataset.exists("orientation")
    add_predictions(view, {"orientation": Constant()}, progress=False)
    results = evaluate(view, ["orientation"], print_report=False)
    expected = sum(label == "hdvb" for label in view.values("orientation.label")) / len(view)
    assert results["orientation"]["accuracy"] == pytest.approx(expected)
    assert view.first().orientation_pred.confidence == pytest.approx(0.7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make test installs it)")
def test_app_in_headless_chromium(loaded, procedural_build, tmp_path):
    dataset, cache = loaded
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "fpus23_dataset.cli", "fiftyone", str(procedural_build), "--name", "fpus23-test",
               "--cache-dir", str(cache), "--database-dir", os.environ["FIFTYONE_DATABASE_DIR"], "--launch", "--port", str(port)]
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that; a terminal's Ctrl-C is what this test stands for, so the server gets the default handler.
    # Its output goes to a file: an unread pipe fills up with progress bars, and a server blocked
    # writing to it cannot shut down on Ctrl-C.
    log = tmp_path / "server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("fiftyone command exited:\n" + log.read_text()[-3000:])
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/datasets/fpus23-test"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser = Chromium(tmp_path / "chromium")
        try:
            browser.open(url)
            # the App shows the dataset name and its sample count once its GraphQL queries return
            browser.wait_for_text(["fpus23-test", f"{len(dataset)} samples"], timeout=180)
            time.sleep(3)  # let the sample grid paint its thumbnails
            screenshot = browser.screenshot(ARTIFACTS / "fiftyone_app.png")
        finally:
            browser.close()
        with Image.open(screenshot) as image:
            assert image.size == (1400, 900)
            grey = np.asarray(image.convert("L"))
        # a rendered App (toolbar, sidebar, grid of ultrasound thumbnails) is far from a blank page
        assert len(np.unique(grey)) > 64 and grey.std() > 10
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=120)  # closing the session may wait on the App server and the database
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail("the fiftyone command did not stop on Ctrl-C within 120 s; its output ended:\n" + log.read_text()[-3000:])
    # nothing left behind: the App server port is free again
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
