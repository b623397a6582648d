"""A small fake CVAT server: just the REST endpoints cvat-sdk's auto-annotation driver calls.

`cvat_sdk.auto_annotation.annotate_task(client, task_id, function)` with a real `cvat_sdk.Client` talks
to it over HTTP on 127.0.0.1: server about (the client's version check), login/logout, task retrieve,
the task's labels (paginated), data meta, chunk download (a zip of the task's frames, "imageset"
chunks as CVAT keeps image tasks) and the annotations upload (PUT with clear_existing, PATCH
?action=create without). Responses carry the fields CVAT sends that the SDK's OpenAPI models read;
what the driver uploads is kept, parsed, in `uploads` for the test to check.

Labels come from a real FPUS23 export's `<labels>` meta (read_labels_meta), with ids the server gives:
label ids `label_base + k`, attribute ids `label_base * 10 + 10 * k + j`, so each task's ids differ.
"""
from __future__ import annotations

import io
import json
import threading
import zipfile
from dataclasses import dataclass, field

from PIL import Image
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TOKEN = "fake-session"
DATE = "2026-01-01T00:00:00.000000Z"


@dataclass
class FakeTask:
    id: int
    name: str
    labels_meta: list[dict]  # [{"name", "type", "attributes": {name: [values]}}], as read_labels_meta returns
    frames: list[tuple[str, bytes]]  # (name, image bytes)
    label_base: int = 100
    chunk_size: int = 2

    def labels(self) -> list[dict]:
        return [{
            "id": self.label_base + k, "name": m["name"], "color": "#ff0000", "type": m.get("type", "any"),
            "sublabels": [], "has_parent": False, "task_id": self.id, "svg": "",
            "attributes": [{"id": self.label_base * 10 + 10 * k + j, "name": name, "mutable": False,
                            "input_type": "select", "default_value": values[0], "values": values}
                           for j, (name, values) in enumerate(m["attributes"].items())],
        } for k, m in enumerate(self.labels_meta)]

    def attribute_ids(self) -> dict[int, dict]:
        """attribute id -> {"label", "name", "values"}."""
        return {a["id"]: {"label": label["name"], "name": a["name"], "values": a["values"]}
                for label in self.labels() for a in label["attributes"]}


@dataclass
class FakeCvat:
    version: str  # what /api/server/about reports: the SDK's own version, so its version check passes
    tasks: dict[int, FakeTask]
    uploads: list[tuple[str, int, dict]] = field(default_factory=list)  # (method, task id, JSON body)
    url: str = ""

    def __enter__(self) -> "FakeCvat":
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join()

    # -- the app -----------------------------------------------------------------------------------

    def _app(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._route(request)
        except KeyError:
            response = _json({"detail": "Not found."}, 404)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        method, parts = request.method, request.path.strip("/").split("/")
        if parts[:1] != ["api"]:
            return _json({"detail": "Not found."}, 404)
        parts = parts[1:]
        if parts == ["server", "about"]:
            return _json({"name": "Computer Vision Annotation Tool", "description": "fake", "version": self.version,
                          "logo_url": "", "subtitle": ""})
        if parts == ["auth", "login"] and method == "POST":
            response = _json({"key": TOKEN})
            response.set_cookie("sessionid", TOKEN)
            response.set_cookie("csrftoken", "fake-csrf")
            return response
        if parts == ["auth", "logout"] and method == "POST":
            return _json({"detail": "Successfully logged out."})
        if request.cookies.get("sessionid") != TOKEN and request.headers.get("Authorization") != f"Token {TOKEN}":
            return _json({"detail": "Authentication credentials were not provided."}, 401)
        if parts == ["labels"] and method == "GET":
            return self._labels(request)
        if len(parts) >= 2 and parts[0] == "tasks":
            task = self.tasks[int(parts[1])]
            if parts[2:] == [] and method == "GET":
                return _json(self._task_json(task, request))
            if parts[2:] == ["data", "meta"] and method == "GET":
                return _json(self._data_meta(task))
            if parts[2:] == ["data"] and method == "GET" and request.args.get("type") == "chunk":
                return self._chunk(task, int(request.args["number"]))
            if parts[2:] == ["annotations"] and method in ("PUT", "PATCH"):
                body = json.loads(request.get_data() or b"{}")
                self.uploads.append((method if method == "PUT" else f"PATCH {request.args.get('action')}", task.id, body))
                return _json({"version": 1, "tags": body.get("tags", []), "shapes": body.get("shapes", []),
                              "tracks": body.get("tracks", [])})
        return _json({"detail": "Not found."}, 404)

    def _task_json(self, task: FakeTask, request: Request) -> dict:
        base = request.host_url.rstrip("/")
        size = len(task.frames)
        return {
            "url": f"{base}/api/tasks/{task.id}", "id": task.id, "name": task.name, "project_id": None,
            "mode": "annotation", "owner": {"url": f"{base}/api/users/1", "id": 1, "username": "admin",
                                            "first_name": "", "last_name": ""},
            "assignee": None, "bug_tracker": "", "created_date": DATE, "updated_date": DATE, "overlap": 0,
            "segment_size": size, "status": "annotation", "data_chunk_size": task.chunk_size,
            "data_compressed_chunk_type": "imageset", "data_original_chunk_type": "imageset", "size": size,
            "image_quality": 70, "data": task.id, "dimension": "2d", "subset": "", "organization": None,
            "target_storage": None, "source_storage": None,
            "jobs": {"count": 1, "completed": 0, "validation": 0, "url": f"{base}/api/jobs?task_id={task.id}"},
            "labels": {"url": f"{base}/api/labels?task_id={task.id}"},
        }

    def _labels(self, request: Request) -> Response:
        task = self.tasks[int(request.args["task_id"])]
        labels = task.labels()
        page, size = int(request.args.get("page", 1)), int(request.args.get("page_size", 3))
        # Three per page: the driver must follow `next` to see every label, as it must on a real server.
        chunk = labels[(page - 1) * size: page * size]
        more = page * size < len(labels)
        base = request.base_url
        return _json({"count": len(labels), "results": chunk, "previous": None,
                      "next": f"{base}?task_id={task.id}&page={page + 1}&page_size={size}" if more else None})

    def _data_meta(self, task: FakeTask) -> dict:
        frames = []
        for name, data in task.frames:
            with Image.open(io.BytesIO(data)) as image:
                frames.append({"name": name, "width": image.width, "height": image.height,
                               "related_files": 0, "has_related_context": False})
        return {"chunks_updated_date": DATE, "chunk_size": task.chunk_size, "size": len(task.frames),
                "image_quality": 70, "start_frame": 0, "stop_frame": len(task.frames) - 1, "frame_filter": "",
                "frames": frames, "deleted_frames": [], "included_frames": None, "storage": "local",
                "cloud_storage_id": None}

    def _chunk(self, task: FakeTask, number: int) -> Response:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as chunk:
            for k, (name, data) in enumerate(task.frames[number * task.chunk_size:(number + 1) * task.chunk_size]):
                chunk.writestr(f"{number * task.chunk_size + k:06d}.png", data)
        return Response(buffer.getvalue(), mimetype="application/zip")


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")
