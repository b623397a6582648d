"""nuclio handler: the same functions and outputs as the Flask server, for nuclio deployments."""
import json
import os

from cvat_plugin.functions import PRELABEL, load_functions
from cvat_plugin.server import DEFAULT_MAX_PIXELS, RequestError, decode_payload


def init_context(context):
    models = os.environ.get("FPUS23_MODELS", "/opt/nuclio/models")
    context.logger.info(f"loading FPUS23 bundles from {models}")
    context.user_data.function = load_functions(models)[PRELABEL]
    context.logger.info("FPUS23 pre-labeller ready")


def handler(context, event):
    body = event.body if isinstance(event.body, (bytes, bytearray)) else json.dumps(event.body).encode()
    try:
        image, threshold = decode_payload(body, DEFAULT_MAX_PIXELS)
    except RequestError as error:
        return context.Response(body=json.dumps({"error": error.message}), headers={},
                                content_type="application/json", status_code=error.status)
    result = context.user_data.function(image, threshold)
    return context.Response(body=json.dumps(result), headers={}, content_type="application/json", status_code=200)
