"""Flask app factory speaking the part of the nuclio dashboard API that CVAT's lambda manager uses.

    GET  /health                      ready only when the models are loaded (503 before / on failure)
    GET  /api/functions               {name: function} as the nuclio dashboard lists them
    GET  /api/functions/<name>        one function
    POST /api/function_invocations    invoke the function named by the x-nuclio-function-name header
    POST /api/functions/<name>/invoke invoke one function directly
    POST /                            direct invocation: on a function's own port (see `direct_ports`)
                                      that function, else x-nuclio-function-name, else fpus23-prelabel

CVAT's "direct" invoke method posts to `/` of the port a function reports (`status.httpPort`), so
with `direct_ports` each function reports, and is reachable on, a port of its own.
Body: {"image": base64 image (any format Pillow decodes, any mode), "threshold": 0..1 (optional: by
default each bundle's per-class thresholds, chosen on its validation split)}. Reply: CVAT detector items.
Optional bearer token (FPUS23_CVAT_TOKEN). No request names a file: functions are a fixed table.
Serve with `fpus23-cvat serve` (waitress), not Flask's development server.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import HTTPException

from fpus23_dataset.errors import UserError

from .functions import PRELABEL, Function, discover_bundles, load_functions, nuclio_function_json

LOG = logging.getLogger("fpus23.cvat")
TOKEN_ENV = "FPUS23_CVAT_TOKEN"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096


class ServeError(UserError):
    pass


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _State:
    functions: dict[str, Function] | None = None
    error: str | None = None
    loaded_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def _error(status: int, message: str, **headers) -> Response:
    return _json({"error": message, "status": status}, status, headers or None)


def decode_payload(body: bytes, max_pixels: int) -> tuple[Image.Image, float | None]:
    """The request's image (decoded, checked) and threshold; RequestError with a status otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object with an 'image' field")
    encoded = payload.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestError(400, "'image' is required: a base64-encoded image (PNG, JPEG, BMP, TIFF, WEBP, ...)")
    if encoded.startswith("data:") and "," in encoded:  # data URL
        encoded = encoded.split(",", 1)[1]
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "'image' is not valid base64") from None
    threshold = payload.get("threshold")  # none given: each bundle's thresholds, calibrated on its validation split
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= float(threshold) <= 1.0):
        raise RequestError(400, "'threshold' must be a number between 0 and 1")
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise RequestError(413, f"image has {width}x{height} pixels, more than the limit of {max_pixels:,}")
        image.load()
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(413, "image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(400, "'image' bytes are not an image Pillow can decode") from None
    return image, None if threshold is None else float(threshold)


def create_app(
    models_dir: Path | str,
    *,
    port: int = 8070,
    direct_ports: dict[str, int] | None = None,
    token: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: bool = False,
    device: str = "cpu",
) -> Flask:
    """The server app. Models load at once (or in a thread with `background`); until then /health is 503.
    `direct_ports`: function name -> the port it is served on alone (see `serve`)."""
    direct_ports = dict(direct_ports or {})
    function_on_port = {str(number): name for name, number in direct_ports.items()}
    app = Flask("fpus23-cvat")
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    token = token or None  # "" means no token
    state = _State()
    app.extensions["fpus23"] = state

    def load() -> None:
        try:
            functions = load_functions(models_dir, device=device)
        except Exception as error:  # noqa: BLE001 - any failure must reach the log and /health
            state.error = f"{type(error).__name__}: {error}"
            LOG.error("model load failed from %s: %s", models_dir, state.error)
            return
        state.functions, state.loaded_at = functions, time.time()
        LOG.info("ready: %d functions from %s (%s)", len(functions), models_dir, ", ".join(functions))

    if background:
        threading.Thread(target=load, name="fpus23-model-load", daemon=True).start()
    else:
        load()

    def ready_functions() -> dict[str, Function]:
        if state.functions is None:
            raise RequestError(503, f"models not available: {state.error}" if state.error else "models are loading")
        return state.functions

    @app.errorhandler(RequestError)
    def request_error(error: RequestError):
        return _error(error.status, error.message)

    @app.errorhandler(413)
    def too_large(_):
        return _error(413, f"request body larger than the limit of {max_bytes:,} bytes")

    @app.errorhandler(404)
    def not_found(_):
        return _error(404, "no such endpoint")

    @app.errorhandler(405)
    def not_allowed(_):
        return _error(405, "method not allowed")

    @app.errorhandler(Exception)
    def unexpected(error):
        if isinstance(error, HTTPException):
            return _error(error.code or 500, error.description or error.name)
        LOG.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(error).__name__}")

    @app.before_request
    def authenticate():
        if token is None or request.path == "/health":
            return None
        header = request.headers.get("Authorization", "")
        supplied = header[7:] if header.startswith("Bearer ") else ""
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="fpus23-cvat"'})
        return None

    @app.get("/health")
    def health():
        if state.functions is not None:
            return _json({"status": "ready", "functions": sorted(state.functions)})
        if state.error:
            return _json({"status": "error", "error": state.error}, 503)
        return _json({"status": "loading"}, 503)

    @app.get("/api/functions")
    def list_functions():
        return _json({name: nuclio_function_json(f, direct_ports.get(name, port)) for name, f in ready_functions().items()})

    @app.get("/api/functions/<name>")
    def get_function(name: str):
        function = ready_functions().get(name)
        if function is None:
            raise RequestError(404, f"no function named {name!r}")
        return _json(nuclio_function_json(function, direct_ports.get(name, port)))

    def invoke(name: str | None):
        functions = ready_functions()
        if not name:
            raise RequestError(400, "missing x-nuclio-function-name header")
        function = functions.get(name)
        if function is None:
            raise RequestError(404, f"no function named {name!r}")
        image, threshold = decode_payload(request.get_data(cache=False), max_pixels)
        started = time.perf_counter()
        result = function(image, threshold)
        LOG.debug("%s: %d items in %.1f ms", name, len(result), (time.perf_counter() - started) * 1000)
        return _json(result)

    @app.post("/api/function_invocations")
    def function_invocations():
        return invoke(request.headers.get("x-nuclio-function-name"))

    @app.post("/api/functions/<name>/invoke")
    def invoke_direct(name: str):
        return invoke(name)

    @app.post("/")
    def invoke_root():
        own = function_on_port.get(str(request.environ.get("SERVER_PORT")))
        return invoke(own or request.headers.get("x-nuclio-function-name") or PRELABEL)

    return app


def function_ports(models_dir: Path | str, first_port: int) -> dict[str, int]:
    """The port each function is served on alone: fpus23-prelabel on `first_port`, then each bundle's
    function in name order; fixed by the bundles folder, so CVAT's listing and the sockets agree."""
    names = [PRELABEL] + [f"fpus23-{name}" for name in sorted(discover_bundles(models_dir))]
    return {name: first_port + k for k, name in enumerate(names)}


def serve(models_dir: Path | str, host: str = "127.0.0.1", port: int = 8070, threads: int = 4,
          direct_port: int | None = None, **options) -> None:
    """Serve with waitress (production WSGI server); models load in the background. `direct_port`:
    also serve each function alone on its own port from there (CVAT's direct invoke method)."""
    from waitress.server import create_server

    discover_bundles(models_dir)  # a wrong folder fails here, in one line, not later in the loading thread
    ports = function_ports(models_dir, direct_port) if direct_port else {}
    app = create_app(models_dir, port=port, direct_ports=ports, background=True, **options)
    listen = " ".join(f"{host}:{number}" for number in [port, *ports.values()])
    try:
        server = create_server(app, listen=listen, threads=threads, ident="fpus23-cvat")
    except OSError as error:
        raise ServeError(f"cannot listen on {listen} ({error.strerror or error}): another program holds one of "
                         f"these ports, or the host is not this machine's; choose others with --port/--direct-port") from None
    LOG.info("fpus23-cvat listening on http://%s:%d (models from %s)%s", host, port, models_dir,
             "".join(f"; {name} alone on :{number}" for name, number in ports.items()))
    server.run()
