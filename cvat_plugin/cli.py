"""`fpus23-cvat ...`: serve the CVAT functions, pre-label a recording offline, write the nuclio spec."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path

from fpus23_dataset.cli import HelpFormatter
from fpus23_dataset.errors import UserError


def _serve(args) -> int:
    from .server import serve

    serve(args.models, host=args.host, port=args.port, threads=args.threads, direct_port=args.direct_port,
          max_bytes=args.max_bytes, max_pixels=args.max_pixels, device=args.device)
    return 0


def _prelabel(args) -> int:
    from .functions import load_functions
    from .prelabel import prelabel_recording

    if not args.recording.is_dir():
        raise FileNotFoundError(f"{args.recording}: no such recording folder (a folder of frames)")
    count = prelabel_recording(args.recording, args.out, load_functions(args.models, device=args.device),
                               threshold=args.threshold, progress=not args.quiet, smooth=not args.per_frame,
                               tracks=not args.shapes)
    print(f"{args.out}: {count} frames pre-labelled (source=auto); import it in CVAT with Upload annotations, "
          f"format CVAT for images 1.1")
    return 0


def _functions(args) -> int:
    from .functions import load_functions, nuclio_function_json

    from .server import function_ports

    functions = load_functions(args.models)
    ports = function_ports(args.models, args.direct_port) if args.direct_port else {}
    print(json.dumps({n: nuclio_function_json(f, ports.get(n, args.port)) for n, f in functions.items()}, indent=2))
    return 0


def _nuclio_yaml(args) -> int:
    from .nuclio_spec import function_yaml

    text = function_yaml()
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpus23-cvat", description="FPUS23 pre-labelling for CVAT",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"fpus23-cvat {version('fpus23')}")
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the nuclio-compatible API for CVAT (waitress)")
    s.add_argument("--models", type=Path, required=True, help="folder of model bundles")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 (or the Docker bridge's address) for CVAT's containers to reach it")
    s.add_argument("--port", type=int, default=8070, help="the dashboard API port CVAT's lambda manager calls")
    s.add_argument("--direct-port", type=int, help="also serve each function alone on its own port from this one "
                   "(fpus23-prelabel first, then the bundles by name): what CVAT's direct invoke method calls")
    s.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    s.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024, help="largest request body accepted, in bytes")
    s.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest decoded image accepted, in pixels")
    s.add_argument("--device", default="cpu", help="torch device the models run on")
    s.set_defaults(func=_serve)
    s = sub.add_parser("prelabel", help="pre-label a recording folder into a CVAT for images 1.1 XML (boxes as tracks)")
    s.add_argument("recording", type=Path, help="folder of one recording's frames")
    s.add_argument("--out", type=Path, required=True, help="CVAT for images 1.1 XML file to write")
    s.add_argument("--models", type=Path, required=True, help="folder of model bundles")
    s.add_argument("--threshold", type=float, default=None,
                   help="one score threshold for every output (default: each bundle's per-class thresholds, chosen on its validation split)")
    s.add_argument("--device", default="cpu", help="torch device the models run on")
    s.add_argument("--per-frame", action="store_true", help="each frame's tags as predicted (default: orientation and "
                   "probe voted over the recording, anatomy over 7 frames either side)")
    s.add_argument("--shapes", action="store_true", help="each frame's boxes as separate shapes (default: boxes linked "
                   "over consecutive frames into CVAT tracks, keyframes only where interpolation strays, so one "
                   "correction fixes the frames up to the next keyframe)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_prelabel)
    s = sub.add_parser("functions", help="print the function list as CVAT will see it")
    s.add_argument("--models", type=Path, required=True, help="folder of model bundles")
    s.add_argument("--port", type=int, default=8070, help="the dashboard API port, as for serve")
    s.add_argument("--direct-port", type=int, help="as for serve")
    s.set_defaults(func=_functions)
    s = sub.add_parser("nuclio-yaml", help="write cvat_plugin/nuclio/function.yaml from the schema")
    s.add_argument("--out", type=Path, help="file to write (default: print to stdout)")
    s.set_defaults(func=_nuclio_yaml)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as error:  # a wrong path, a busy port: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
