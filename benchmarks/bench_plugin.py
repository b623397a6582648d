"""Load test of `fpus23-prelabel` over HTTP: frames/s and p50/p95 latency at concurrency 1 and 4,
for the smallest bundles and for the paper's ResNet34 ones, in one run, on this machine.

    .venv/bin/python benchmarks/bench_plugin.py [--small DIR] [--paper DIR] [--requests 40] [--seconds 120]

Without --small/--paper it exports freshly initialised bundles of each size (cost does not depend
on training: same layers, same proposals). Targets only 127.0.0.1; every loop is bounded in count
and time. Results: benchmarks/results/plugin.json and plugin.md.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {
    # name: {task: (arch, image scale, detector proposals)}
    "smallest": {"bounds": ("fasterrcnn_resnet10", 0.5, 100), "orientation": ("resnet8", 0.35, None),
                 "anatomy": ("resnet8", 0.35, None), "plane": ("resnet8", 0.35, None)},
    "paper-resnet34": {"bounds": ("fasterrcnn_resnet34", 1.0, None), "orientation": ("resnet34", 1.0, None),
                       "anatomy": ("resnet34", 1.0, None), "plane": ("resnet34", 1.0, None)},
}


def export_untrained(size: str, out: Path) -> Path:
    from baselines.bundle import export_bundle
    from baselines.data import InputSpec
    from baselines.models import build_model
    from fpus23_dataset import schema

    import torch

    torch.manual_seed(0)
    for task, (arch, scale, proposals) in SIZES[size].items():
        spec = InputSpec.at_scale(scale)
        model = build_model(task, arch, len(schema.class_names(task)), "scratch", (spec.height, spec.width), proposals)
        export_bundle(model, out / task, task=task, arch=arch, spec=spec, dataset={"version": None, "fingerprint": None},
                      protocol="untrained (benchmark)", metrics={}, model_options={"proposals": proposals})
    return out


def frames(count: int) -> list[bytes]:
    from fpus23_dataset.synth import render
    from fpus23_dataset.synth import procedural_frames, procedural_stream_names
    from fpus23_dataset.synth import spec_from_frame
    from PIL import Image

    out = []
    for stream in procedural_stream_names(4):
        for frame in procedural_frames(stream, max(1, count // 4)):
            buffer = io.BytesIO()
            Image.fromarray(render(spec_from_frame(frame))).save(buffer, format="PNG", compress_level=1)
            out.append(buffer.getvalue())
    return out[:count]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server on {port} not ready after {seconds} s")


def load(port: int, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    url = f"http://127.0.0.1:{port}/api/function_invocations"
    deadline = time.time() + seconds

    def call(k: int):
        if time.time() > deadline:
            return None
        request = urllib.request.Request(url, data=bodies[k % len(bodies)], method="POST",
                                         headers={"Content-Type": "application/json", "x-nuclio-function-name": "fpus23-prelabel"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                ok = reply.status == 200 and isinstance(json.loads(reply.read()), list)
        except OSError:
            ok = False
        return time.perf_counter() - started, ok

    call(0)  # warm-up, not counted
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(call, range(requests)) if r is not None]
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "concurrency": concurrency, "requests": len(results), "errors": sum(not r[1] for r in results),
        "frames_per_s": round(len(results) / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=Path, help="folder of the smallest bundles (default: untrained ones)")
    parser.add_argument("--paper", type=Path, help="folder of the paper's ResNet34 bundles (default: untrained ones)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=120, help="time cap per load level")
    args = parser.parse_args()
    bodies = [json.dumps({"image": base64.b64encode(f).decode(), "threshold": 0.5}).encode() for f in frames(16)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, given in (("smallest", args.small), ("paper-resnet34", args.paper)):
            models = given or export_untrained(size, Path(tmp) / size)
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "cvat_plugin.cli", "--log-level", "WARNING", "serve",
                                       "--models", str(models), "--port", str(port), "--threads", "4"],
                                      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
            try:
                wait_ready(port)
                for concurrency in (1, 4):
                    row = {"bundles": size, "trained": given is not None,
                           **load(port, bodies, concurrency, args.requests, args.seconds)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=30)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "plugin.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# fpus23-prelabel over HTTP (waitress, 4 threads, 127.0.0.1)", "",
             "| bundles | concurrency | requests | errors | frames/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['bundles']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['frames_per_s']} | "
              f"{r['p50_ms']} | {r['p95_ms']} |" for r in rows]
    (out / "plugin.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
