from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the plugin needs the [baselines] extra")
pytest.importorskip("flask", reason="the plugin needs the [cvat] extra")

from PIL import Image  # noqa: E402

from cvat_plugin.functions import PRELABEL, label_specs_for, load_functions  # noqa: E402
from cvat_plugin.server import TOKEN_ENV, create_app  # noqa: E402
from conftest import QUICK_TRAINING  # noqa: E402
from fake_cvat import FakeCvat, FakeTask  # noqa: E402
from fpus23_dataset import schema  # noqa: E402
from fpus23_dataset.cvat import read_labels_meta, read_stream  # noqa: E402
from fpus23_dataset.report import Report  # noqa: E402

# What CVAT's lambda manager sends with every call to the nuclio dashboard.
CVAT_HEADERS = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio", "x-nuclio-invoke-via": "domain-name"}


@pytest.fixture(scope="module")
def models_dir(request):
    """quick_runs' bundles; FPUS23_TEST_BUNDLES names bundles made the same way (benchmarks/check_cvat_sdk_versions.sh)."""
    if os.environ.get("FPUS23_TEST_BUNDLES"):
        return Path(os.environ["FPUS23_TEST_BUNDLES"])
    return request.getfixturevalue("quick_runs") / "bundles"


@pytest.fixture(scope="module")
def client(models_dir):
    app = create_app(models_dir, port=8070, token="")
    return app.test_client()


@pytest.fixture(scope="module")
def frame_png(procedural_source) -> bytes:
    return next(iter(sorted((procedural_source / "four_poses").glob("*/frame_000003.png")))).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _task_schema(shared_annotations) -> dict[str, dict[str, set]]:
    """label -> attribute -> values, from the <labels> meta of a real FPUS23 export."""
    meta = read_labels_meta(shared_annotations / "stream_hdvb_aroundabd_h" / "annotations.xml")
    return {m["name"]: {k: set(v) for k, v in m["attributes"].items()} for m in meta}


def _parse_like_cvat(item: dict) -> dict:
    """What cvat/apps/lambda_manager LambdaFunction.__init__ reads, with its checks."""
    annotations = item["metadata"]["annotations"]
    spec = json.loads(annotations.get("spec") or "[]")
    labels = [s["name"] for s in spec]
    assert len(labels) == len(set(labels)), "non-unique labels"
    attributes = {s["name"]: s.get("attributes", []) for s in spec}
    for label, attrs in attributes.items():
        names = [a["name"] for a in attrs]
        assert len(names) == len(set(names)), f"non-unique attributes for {label}"
    return {"id": item["metadata"]["name"], "kind": annotations.get("type"), "labels": labels, "attributes": attributes,
            "state": item["status"]["state"], "description": item["spec"]["description"],
            "port": item["status"].get("httpPort"), "framework": annotations.get("framework"), "spec": spec}


def test_function_list_parses_as_cvat_does_and_matches_the_real_task_schema(client, shared_annotations):
    reply = client.get("/api/functions", headers=CVAT_HEADERS)
    assert reply.status_code == 200
    functions = {name: _parse_like_cvat(item) for name, item in reply.get_json().items()}
    assert PRELABEL in functions and len(functions) == 1 + len(QUICK_TRAINING)  # the pre-labeller and one per bundle
    task = _task_schema(shared_annotations)
    for name, function in functions.items():
        assert function["id"] == name and function["kind"] == "detector" and function["state"] == "ready"
        assert function["port"] == 8070 and function["description"]
        for label in function["spec"]:
            assert label["name"] in task, label["name"]
            for attribute in label["attributes"]:
                assert attribute["name"] in task[label["name"]]
                assert set(attribute["values"]) <= task[label["name"]][attribute["name"]]
    assert functions[PRELABEL]["labels"] == ["head", "arm", "legs", "abdomen", "Orientation", "location", "diagnostic_plane", "Probe"]
    one = client.get(f"/api/functions/{PRELABEL}", headers=CVAT_HEADERS)
    assert one.status_code == 200 and _parse_like_cvat(one.get_json())["id"] == PRELABEL


def test_invocation_as_cvat_sends_it(client, frame_png, shared_annotations):
    headers = {**CVAT_HEADERS, "x-nuclio-function-name": PRELABEL, "x-nuclio-path": "/"}
    reply = client.post("/api/function_invocations", json={"image": _b64(frame_png), "threshold": 0.0}, headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    items = reply.get_json()
    task = _task_schema(shared_annotations)
    kinds = {item["type"] for item in items}
    assert kinds == {"tag", "rectangle"}
    assert {i["label"] for i in items if i["type"] == "tag"} <= {"Orientation", "location", "diagnostic_plane", "Probe"}
    assert sum(i["label"] == "Orientation" for i in items) == 1  # threshold 0: every classifier answers
    for item in items:
        assert item["label"] in task
        if item["type"] == "rectangle":
            xtl, ytl, xbr, ybr = item["points"]
            assert 0 <= xtl < xbr <= 672 and 0 <= ytl < ybr <= 389 and item["attributes"] == []
            assert 0.0 <= float(item["confidence"]) <= 1.0
        else:
            (attribute,) = item["attributes"]
            assert attribute["value"] in task[item["label"]][attribute["name"]]


def test_direct_invocation_and_any_image_mode(client, frame_png):
    grey = Image.open(io.BytesIO(frame_png))
    for mode, fmt in (("RGB", "PNG"), ("RGBA", "PNG"), ("L", "JPEG")):
        buffer = io.BytesIO()
        grey.convert(mode).save(buffer, format=fmt)
        reply = client.post("/", json={"image": _b64(buffer.getvalue()), "threshold": 0.0})
        assert reply.status_code == 200, (mode, reply.get_data(as_text=True))
    one = client.post("/api/functions/fpus23-orientation/invoke", json={"image": _b64(frame_png), "threshold": 0.0})
    assert one.status_code == 200 and [i["label"] for i in one.get_json()] == ["Orientation"]
    high = client.post("/api/functions/fpus23-orientation/invoke", json={"image": _b64(frame_png), "threshold": 1.0})
    assert high.get_json() == [] or high.get_json()[0]["confidence"] == "1.0000"


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps([1, 2]).encode(), 400, "JSON object"),
    (json.dumps({"threshold": 0.5}).encode(), 400, "'image' is required"),
    (json.dumps({"image": "%%%not-base64%%%"}).encode(), 400, "not valid base64"),
    (json.dumps({"image": base64.b64encode(b"hello, not an image").decode()}).encode(), 400, "not an image Pillow can decode"),
    (json.dumps({"image": "aGVsbG8=", "threshold": "high"}).encode(), 400, "'threshold' must be a number"),
])
def test_bad_requests_get_400_with_a_message(client, body, status, message):
    reply = client.post("/api/function_invocations", data=body, content_type="application/json",
                        headers={"x-nuclio-function-name": PRELABEL})
    assert reply.status_code == status and message in reply.get_json()["error"]


def test_other_image_formats_missing_header_and_unknown_function(client, frame_png):
    expected = client.post("/", json={"image": _b64(frame_png), "threshold": 0.0}).get_json()
    for fmt in ("BMP", "TIFF", "WEBP"):  # formats CVAT can hold; lossless, so the same answer as the PNG
        buffer = io.BytesIO()
        Image.open(io.BytesIO(frame_png)).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        reply = client.post("/", json={"image": _b64(buffer.getvalue()), "threshold": 0.0})
        assert reply.status_code == 200 and reply.get_json() == expected, fmt
    reply = client.post("/api/function_invocations", json={"image": _b64(frame_png)})
    assert reply.status_code == 400 and "x-nuclio-function-name" in reply.get_json()["error"]
    reply = client.post("/api/function_invocations", json={"image": _b64(frame_png)}, headers={"x-nuclio-function-name": "../etc/passwd"})
    assert reply.status_code == 404 and "no function named" in reply.get_json()["error"]
    assert client.get("/api/functions/nope").status_code == 404


def test_too_many_pixels_or_bytes_get_413(models_dir, frame_png):
    app = create_app(models_dir, token="", max_pixels=100 * 100, max_bytes=200_000)
    client = app.test_client()
    reply = client.post("/", json={"image": _b64(frame_png)})
    assert reply.status_code == 413 and "672x389 pixels" in reply.get_json()["error"]
    big = client.post("/", data=b"x" * 300_000, content_type="application/json")
    assert big.status_code == 413 and "larger than the limit" in big.get_json()["error"]


def test_bearer_token(models_dir, frame_png, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    client = create_app(models_dir).test_client()
    assert client.get("/health").status_code == 200  # health stays open for probes
    assert client.get("/api/functions").status_code == 401
    wrong = client.get("/api/functions", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.get_json()["error"]
    assert client.get("/api/functions", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_model_load_failure_is_503_and_logged(tmp_path, models_dir, caplog, frame_png):
    shutil.copytree(models_dir / "anatomy", tmp_path / "anatomy")
    (tmp_path / "anatomy" / "model.pt").write_bytes(b"corrupt")
    with caplog.at_level(logging.ERROR, logger="fpus23.cvat"):
        client = create_app(tmp_path, token="").test_client()
    assert any("model load failed" in r.getMessage() for r in caplog.records)
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "error"
    reply = client.post("/", json={"image": _b64(frame_png)})
    assert reply.status_code == 503 and "models not available" in reply.get_json()["error"]


def test_health_is_503_while_loading(models_dir):
    gate = threading.Event()
    import cvat_plugin.server as server

    original = server.load_functions
    server.load_functions = lambda *a, **k: (gate.wait(10), original(*a, **k))[1]
    try:
        client = create_app(models_dir, token="", background=True).test_client()
        assert client.get("/health").get_json() == {"status": "loading"}
        gate.set()
        for _ in range(200):
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/health").status_code == 200
    finally:
        server.load_functions = original


def test_concurrent_requests_over_http_with_waitress(models_dir, frame_png):
    from waitress.server import create_server

    app = create_app(models_dir, token="")
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    port = server.effective_port
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    body = json.dumps({"image": _b64(frame_png), "threshold": 0.3}).encode()

    def call(_):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/function_invocations", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "x-nuclio-function-name": PRELABEL})
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())

    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, range(12)))
    finally:
        server.close()
    assert all(status == 200 for status, _ in results)
    assert all(items == results[0][1] for _, items in results)  # same frame, same answer under load


def test_prelabel_xml_rereads_into_the_same_frames_and_labels(models_dir, procedural_source, tmp_path):
    from cvat_plugin.cli import main as cvat_main

    recording = procedural_source / "four_poses" / "stream_hdvb_aroundhead_h"
    out = tmp_path / "annotations.xml"
    assert cvat_main(["prelabel", str(recording), "--out", str(out), "--models", str(models_dir),
                      "--threshold", "0.0", "--quiet", "--per-frame", "--shapes"]) == 0  # read_stream reads no tracks
    report = Report()
    frames = read_stream("stream_hdvb_aroundhead_h", [out], report)
    assert report.counts == {}
    assert [f.name for f in frames] == sorted(p.name for p in recording.glob("*.png"))
    assert 'source="auto"' in out.read_text()
    function = load_functions(models_dir)[PRELABEL]
    for frame in frames[:3]:
        items = function(Image.open(recording / frame.name), 0.0)
        tags = {i["label"]: i["attributes"][0]["value"] for i in items if i["type"] == "tag"}
        expected = {t.key: t.cvat_values[tags[t.cvat_label]] for t in schema.TAG_TASKS if t.cvat_label in tags}
        assert frame.labels == {**expected, "probe": "h"}  # the Probe tag, from the recording's name (..._h)
        boxes = [(schema.BOX_CVAT_LABELS[i["label"]], i["points"]) for i in items if i["type"] == "rectangle"]
        assert [(b.category, [b.x, b.y, b.x + b.w, b.y + b.h]) for b in frame.boxes] == [
            (c, pytest.approx(p, abs=0.011)) for c, p in boxes]


SDK_TASKS = {"all labels": "stream_hdvb_aroundabd_h", "longrec": "stream_hdvb_longrec_h"}  # longrec: no legs/abdomen/plane


@pytest.fixture(scope="module")
def sdk_function(models_dir):
    pytest.importorskip("cvat_sdk", reason="the SDK function needs the [cvat] extra")
    from cvat_plugin import sdk_function

    return sdk_function.create(models=str(models_dir), threshold=0.0)


@pytest.fixture(scope="module")
def sdk_frames(procedural_source) -> list[tuple[str, bytes]]:
    """Three frames of one rendered recording: two 2-frame chunks for the driver to download."""
    recording = procedural_source / "four_poses" / "stream_hdvb_aroundhead_h"
    return [(p.name, p.read_bytes()) for p in sorted(recording.glob("*.png"))[:3]]


@pytest.fixture(scope="module")
def sdk_predictions(sdk_function, sdk_frames) -> list[tuple]:
    return _predictions(sdk_function, sdk_frames)


def _fake_task(shared_annotations, kind: str, frames) -> FakeTask:
    """A task whose labels (names, attributes, values) are those of a real FPUS23 export's <labels> meta."""
    task_id = {"all labels": 7, "longrec": 8}[kind]
    meta = read_labels_meta(shared_annotations / SDK_TASKS[kind] / "annotations.xml")
    return FakeTask(task_id, SDK_TASKS[kind], meta, frames, label_base=100 * task_id)


def _predictions(function, frames) -> list[tuple]:
    """The function's own output on each frame, called directly: (frame, label, shape type, attributes, points)."""
    names = {label.id: label.name for label in function.spec.labels}
    attribute_names = {label.id: [a.name for a in label.attributes] for label in function.spec.labels}
    context = type("Context", (), {"conf_threshold": None})()
    out = []
    for frame, (_, data) in enumerate(frames):
        for a in function.detect(context, Image.open(io.BytesIO(data))):
            attrs = tuple(sorted((attribute_names[a.label_id][v.spec_id], v.value) for v in getattr(a, "attributes", [])))
            out.append((frame, names[a.label_id], getattr(getattr(a, "type", None), "value", None), attrs,
                        tuple(round(x, 3) for x in getattr(a, "points", []))))
    return sorted(out)


def _received(upload: dict, task: FakeTask) -> list[tuple]:
    """What the fake server got, read back through the task's own label and attribute ids."""
    names = {label["id"]: label["name"] for label in task.labels()}
    attributes = task.attribute_ids()
    out = []
    for kind, items in (("tag", upload.get("tags", [])), ("shape", upload.get("shapes", []))):
        for item in items:
            assert item["source"] == "auto" and item["label_id"] in names, item
            for a in item.get("attributes", []):  # each attribute id is one of this label's, the value one of its values
                assert attributes[a["spec_id"]]["label"] == names[item["label_id"]], item
                assert a["value"] in attributes[a["spec_id"]]["values"], item
            attrs = tuple(sorted((attributes[a["spec_id"]]["name"], a["value"]) for a in item.get("attributes", [])))
            out.append((item["frame"], names[item["label_id"]], item.get("type") if kind == "shape" else None, attrs,
                        tuple(round(x, 3) for x in item.get("points", []))))
    return sorted(out)


@pytest.mark.parametrize("kind", list(SDK_TASKS))
def test_cvat_sdk_driver_annotates_a_real_fpus23_task(sdk_function, sdk_frames, sdk_predictions, shared_annotations,
                                                      kind, tmp_path):
    """The function through cvat-sdk's public driver, a real Client, and an HTTP server shaped like CVAT's.

    `--allow-unmatched-labels` (allow_unmatched_labels=True) is what the README's command passes: on a task with
    every label it changes nothing, on a longrec task it drops the predictions for labels the task lacks.
    """
    import cvat_sdk
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.core.client import Client, Config

    print(f"cvat-sdk {cvat_sdk.__version__} from {cvat_sdk.__file__}")
    task = _fake_task(shared_annotations, kind, sdk_frames)
    with FakeCvat(cvat_sdk.__version__, {task.id: task}) as server:
        client = Client(server.url, config=Config(cache_dir=tmp_path / "cache"))
        client.login(("annotator", "secret"))
        cvataa.annotate_task(client, task.id, sdk_function, clear_existing=kind == "longrec",
                             allow_unmatched_labels=True)
        client.close()

    assert [(method, task_id) for method, task_id, _ in server.uploads] == [
        ("PUT" if kind == "longrec" else "PATCH create", task.id)]
    received = _received(server.uploads[0][2], task)
    task_labels = {m["name"] for m in task.labels_meta}
    assert received == [p for p in sdk_predictions if p[1] in task_labels]  # the function's output, ids mapped
    labels = {name for _, name, *_ in received}
    assert {"Orientation", "location", "Probe"} <= labels  # every frame's tags, Probe included
    assert all(sum(1 for f, n, *_ in received if f == frame and n == "Probe") == 1 for frame in range(len(sdk_frames)))
    assert {n for _, n, t, *_ in received if t == "rectangle"} <= {"head", "arm", "legs", "abdomen"}
    assert labels <= task_labels  # longrec: nothing for legs, abdomen, diagnostic_plane
    # What the function predicts before the driver maps it: a diagnostic_plane tag the longrec task has no label for.
    predicted = {n for _, n, *_ in sdk_predictions}
    assert "diagnostic_plane" in predicted and labels == predicted & task_labels


def test_cvat_sdk_driver_refuses_a_longrec_task_without_allow_unmatched_labels(sdk_function, sdk_frames,
                                                                               shared_annotations, tmp_path):
    """Why the README's command carries --allow-unmatched-labels: the function's spec names every FPUS23 label."""
    import cvat_sdk
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk.core.client import Client, Config

    task = _fake_task(shared_annotations, "longrec", sdk_frames)
    with FakeCvat(cvat_sdk.__version__, {task.id: task}) as server:
        client = Client(server.url, config=Config(cache_dir=tmp_path / "cache"))
        client.login(("annotator", "secret"))
        with pytest.raises(cvataa.BadFunctionError, match="(diagnostic_plane|abdomen|legs).*not in dataset"):
            cvataa.annotate_task(client, task.id, sdk_function)
        client.close()
    assert server.uploads == []


def _readme_cvat_cli_command() -> list[str]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "cvat-cli " in line and "auto-annotate" in line)
    return line[line.index("cvat-cli "):].split("`")[0].split()


@pytest.mark.parametrize("kind", list(SDK_TASKS))
def test_the_readme_cvat_cli_command_annotates_every_kind_of_fpus23_task(models_dir, sdk_frames, shared_annotations,
                                                                         kind, tmp_path):
    """The README's `cvat-cli ... auto-annotate` line, as written, on a task with every label and on a longrec task."""
    pytest.importorskip("cvat_cli", reason="cvat-cli is not installed (pip install -e '.[cvat]')")
    import subprocess
    import sys

    import cvat_sdk

    command = _readme_cvat_cli_command()
    assert command[:1] == ["cvat-cli"] and "--allow-unmatched-labels" in command
    task = _fake_task(shared_annotations, kind, sdk_frames)
    with FakeCvat(cvat_sdk.__version__, {task.id: task}) as server:
        values = {"URL": server.url, "USER": "annotator:secret", "TASK_ID": str(task.id),
                  "models=str:bundles/": f"models=str:{models_dir}"}
        args = [values.get(a, a) for a in command[1:]]
        env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "XDG_CONFIG_HOME": str(tmp_path / "config")}
        env.pop("PASS", None)
        done = subprocess.run([sys.executable, "-m", "cvat_cli", *args], cwd=Path(__file__).resolve().parents[1],
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(server.uploads) == 1 and server.uploads[0][1] == task.id
    received = _received(server.uploads[0][2], task)
    # No threshold in the command: each bundle's calibrated thresholds, as sdk_function.create(models) alone gives.
    from cvat_plugin import sdk_function

    task_labels = {m["name"] for m in task.labels_meta}
    expected = [p for p in _predictions(sdk_function.create(models=str(models_dir)), sdk_frames) if p[1] in task_labels]
    assert received and received == expected


def test_nuclio_yaml_is_generated_from_the_schema(frame_png, models_dir, monkeypatch):
    import yaml

    from cvat_plugin.nuclio_spec import TASKS, function_yaml
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "cvat_plugin" / "nuclio" / "function.yaml"
    assert path.read_text() == function_yaml(), "regenerate with: fpus23-cvat nuclio-yaml --out cvat_plugin/nuclio/function.yaml"
    document = yaml.safe_load(path.read_text())
    assert json.loads(document["metadata"]["annotations"]["spec"]) == label_specs_for(TASKS)

    from cvat_plugin.nuclio import main as handler_module

    class Context:
        class logger:
            info = staticmethod(lambda *a: None)

        class user_data:
            pass

        class Response:
            def __init__(self, body, headers, content_type, status_code):
                self.body, self.status_code = body, status_code

    monkeypatch.setenv("FPUS23_MODELS", str(models_dir))
    handler_module.init_context(Context)
    ok = handler_module.handler(Context, type("Event", (), {"body": json.dumps({"image": _b64(frame_png), "threshold": 0.0}).encode()}))
    assert ok.status_code == 200 and any(i["label"] == "Orientation" for i in json.loads(ok.body))
    bad = handler_module.handler(Context, type("Event", (), {"body": b"{"}))
    assert bad.status_code == 400


def test_nuclio_build_steps_use_only_paths_that_exist_at_their_step(tmp_path):
    """nuclio's generated Dockerfile (its function-configuration reference): FROM the base image, the
    `preCopy` directives, COPY of the function folder to /opt/nuclio, the `postCopy` directives. Lay
    out the function folder as the yaml's header says, replay the steps on a stand-in image tree, and
    check that each path a step names exists by then."""
    import re
    import shutil
    from pathlib import Path

    import yaml

    from cvat_plugin.nuclio_spec import FUNCTION_DIR, function_yaml

    spec = yaml.safe_load(function_yaml())["spec"]
    function_folder = tmp_path / "function"  # cvat_plugin/nuclio/ + the repository in fpus23/ + bundles in models/
    shutil.copytree(Path(__file__).resolve().parents[1] / "cvat_plugin" / "nuclio", function_folder)
    (function_folder / "fpus23").mkdir()
    (function_folder / "fpus23" / "pyproject.toml").write_text("[project]\nname = 'fpus23'\n")
    (function_folder / "models").mkdir()
    image = tmp_path / "image"  # the container's file system
    image.mkdir()

    def exists(path: str) -> bool:
        return (image / path.lstrip("/")).exists()

    directives = spec["build"]["directives"]
    assert set(directives) <= {"preCopy", "postCopy"}
    steps = [("directive", d) for d in directives.get("preCopy", [])] + [("copy", None)] + \
            [("directive", d) for d in directives.get("postCopy", [])]
    workdir = "/"
    for kind, directive in steps:
        if kind == "copy":
            shutil.copytree(function_folder, image / FUNCTION_DIR.lstrip("/"), dirs_exist_ok=True)
            continue
        if directive["kind"] == "WORKDIR":
            workdir = directive["value"]
            (image / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            continue
        for path in re.findall(r"file://(/[^'\" ]+)", directive["value"]) + re.findall(r"(?<![\w:/])(/opt/[^'\" ]+)", directive["value"]):
            assert exists(path), f"{directive['value']!r} needs {path}, which is not in the image at that step"
    assert workdir == FUNCTION_DIR
    for variable in spec["env"]:
        if variable["value"].startswith("/"):
            assert exists(variable["value"]), variable
    assert exists(f"{FUNCTION_DIR}/{spec['handler'].split(':')[0]}.py")
    install = next(d["value"] for d in directives["postCopy"] if d["kind"] == "RUN")
    assert "fpus23[baselines,cvat]" in install  # the handler imports the plugin and the models' code


def test_direct_invoke_runs_the_function_of_the_port_cvat_calls(models_dir, frame_png):
    """CVAT's direct invoke posts to `/` of the port the dashboard listed for the chosen function."""
    from cvat_plugin.server import function_ports

    ports = function_ports(models_dir, 9100)
    assert ports[PRELABEL] == 9100 and len(ports) == 1 + len(list(models_dir.glob("*/bundle.json")))
    client = create_app(models_dir, port=8070, direct_ports=ports, token="").test_client()
    listed = client.get("/api/functions").get_json()
    assert {name: f["status"]["httpPort"] for name, f in listed.items()} == ports
    body = {"image": _b64(frame_png), "threshold": 0.0}
    for name, port in ports.items():
        reply = client.post("/", json=body, base_url=f"http://localhost:{port}")
        through_dashboard = client.post("/api/function_invocations", json=body, headers={"x-nuclio-function-name": name})
        assert reply.status_code == 200 and reply.get_json() == through_dashboard.get_json(), name
    orientation = client.post("/", json=body, base_url=f"http://localhost:{ports['fpus23-orientation']}").get_json()
    assert [item["label"] for item in orientation] == ["Orientation"]  # that bundle's output, not the pre-labeller's


def test_serve_listens_on_each_functions_port_and_a_busy_port_is_one_line(models_dir, frame_png, capsys):
    import socket

    from cvat_plugin.cli import main as cvat_main
    from cvat_plugin.server import function_ports, serve

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    base, first = free_port(), free_port() + 1000
    threading.Thread(target=serve, args=(models_dir,), kwargs={"port": base, "direct_port": first}, daemon=True).start()
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{base}/health", timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    port = function_ports(models_dir, first)["fpus23-orientation"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps({"image": _b64(frame_png), "threshold": 0.0}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert [item["label"] for item in json.loads(reply.read())] == ["Orientation"]

    assert cvat_main(["serve", "--models", str(models_dir), "--port", str(base)]) == 1  # busy now
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot listen") and "--port" in err[0]
    assert cvat_main(["serve", "--models", str(models_dir / "nope"), "--port", str(free_port())]) == 1
    assert "models folder not found" in capsys.readouterr().err
    assert cvat_main(["prelabel", str(models_dir / "nope"), "--out", "x.xml", "--models", str(models_dir)]) == 1
    assert capsys.readouterr().err.strip().startswith("error: ")


def test_a_request_without_threshold_uses_each_bundles_calibrated_thresholds(client, models_dir, frame_png):
    from baselines.bundle import load_bundle
    from cvat_plugin.functions import to_cvat

    image = Image.open(io.BytesIO(frame_png))
    for name in ("orientation", "bounds"):
        predictor = load_bundle(models_dir / name)
        prediction = predictor.predict([image])[0]
        default = client.post(f"/api/functions/fpus23-{name}/invoke", json={"image": _b64(frame_png)}).get_json()
        assert default == to_cvat(predictor.task, prediction, predictor.thresholds)
        everything = client.post(f"/api/functions/fpus23-{name}/invoke", json={"image": _b64(frame_png), "threshold": 0.0}).get_json()
        assert everything == to_cvat(predictor.task, prediction, 0.0)  # a request's threshold overrides
    # per class: an output is kept when it reaches its own class's threshold, else the default 0.5
    boxes = {"boxes": [[0, 0, 5, 5], [1, 1, 5, 5]], "labels": ["arms", "head"], "scores": [0.3, 0.3]}
    assert [item["label"] for item in to_cvat("bounds", boxes, {"arms": 0.25})] == ["arm"]


def test_the_prelabeller_sends_the_probe_tag_from_a_probe_bundle(client, frame_png):
    listed = client.get("/api/functions").get_json()
    assert "fpus23-probe" in listed and "Probe" in {label["name"] for label in json.loads(listed[PRELABEL]["metadata"]["annotations"]["spec"])}
    items = client.post("/", json={"image": _b64(frame_png), "threshold": 0.0}).get_json()
    (probe,) = [item for item in items if item["label"] == "Probe"]
    assert probe["type"] == "tag" and probe["attributes"][0]["name"] == "orientation" and probe["attributes"][0]["value"] in ("h", "v")


def test_tags_are_voted_over_the_recording_by_confidence():
    from cvat_plugin.prelabel import smooth_tags

    tags = [{"orientation": ("hdvb", 0.9), "anatomy": ("head", 0.9), "plane": ("bpd", 0.6)},
            {"orientation": ("huvf", 0.4), "anatomy": ("arms", 0.3)},
            {"orientation": ("hdvb", 0.5)},
            {"orientation": ("huvf", 0.6), "anatomy": ("legs", 0.8)}]
    smoothed = smooth_tags(tags, {"orientation": None, "anatomy": 1})
    assert [f["orientation"] for f in smoothed] == ["hdvb"] * 4  # 1.4 against 1.0 over the recording
    # anatomy over one frame either side: 0.9 head vs 0.3 arms; head 0.9 vs arms 0.3; arms 0.3 vs legs 0.8; legs
    assert [f.get("anatomy") for f in smoothed] == ["head", "head", "legs", "legs"]
    assert smoothed[0]["plane"] == "bpd" and all("plane" not in f for f in smoothed[1:])  # not smoothed


def test_default_prelabel_gives_one_orientation_per_recording(models_dir, procedural_source, tmp_path):
    from cvat_plugin.cli import main as cvat_main

    recording = procedural_source / "four_poses" / "stream_huvf_aroundlegs_v"
    out = tmp_path / "smoothed.xml"
    assert cvat_main(["prelabel", str(recording), "--out", str(out), "--models", str(models_dir), "--threshold", "0.0", "--quiet"]) == 0
    frames = read_stream(recording.name, [out], Report())
    assert len({f.labels["orientation"] for f in frames}) == 1 and {f.labels["probe"] for f in frames} == {"v"}
    assert "<track " in out.read_text()  # boxes linked into CVAT tracks by default (tests/test_tracks.py)
