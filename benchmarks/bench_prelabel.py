"""What smoothing tags over a recording buys: per-frame against smoothed tag accuracy of the offline
pre-labeller, on renders of real annotation streams the models never saw.

    .venv/bin/python benchmarks/bench_prelabel.py --models bundles/ [--streams S ...] [--work /tmp/fpus23-prelabel]

The renders follow the streams' real annotation geometry and tags (`fpus23 synth --annotations`);
a missing tag counts as wrong. Results: benchmarks/results/prelabel.json and prelabel.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FPUS23_SHARED", REPO.parent / "shared")) / "fpus23-annotations"
RESULTS = REPO / "benchmarks" / "results"
HELD_OUT = ["stream_hdvb_aroundabd_h", "stream_hdvf_aroundarms_h", "stream_huvb_aroundhead_v", "stream_huvf_aroundlegs_v"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="bundles folder (e.g. from fpus23-baselines quickstart)")
    parser.add_argument("--streams", nargs="+", default=HELD_OUT)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fpus23-prelabel"))
    args = parser.parse_args()

    from cvat_plugin.functions import PRELABEL, load_functions
    from cvat_plugin.prelabel import SMOOTHING, predict_recording, smooth_tags
    from fpus23_dataset.cvat import discover, read_stream
    from fpus23_dataset.report import Report
    from fpus23_dataset.synth import render_annotations

    rendered = args.work / "render"
    if not rendered.is_dir():
        render_annotations(SHARED, rendered, streams=args.streams)
    source = discover(rendered)
    function = load_functions(args.models)[PRELABEL]
    rows = []
    for stream in args.streams:
        truth = {f.name: f.labels for f in read_stream(stream, source.streams[stream].xml_files, Report())}
        files = sorted((rendered / "four_poses" / stream).glob("*.png"))
        predicted = predict_recording(files, function, None)
        per_frame = [{key: value for key, (value, _) in tags.items()} for _, tags in predicted]
        smoothed = smooth_tags([tags for _, tags in predicted])
        for task in ("orientation", "anatomy"):
            names = [f.name for f, _ in predicted if task in truth[f.name]]
            if not names:
                continue
            index = {f.name: k for k, (f, _) in enumerate(predicted)}
            right = lambda labels: sum(labels[index[n]].get(task) == truth[n][task] for n in names) / len(names)  # noqa: E731
            rows.append({"stream": stream, "task": task, "frames": len(names), "window": SMOOTHING[task],
                         "per_frame_accuracy": round(right(per_frame), 4), "smoothed_accuracy": round(right(smoothed), 4)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prelabel.json").write_text(json.dumps({"models": str(args.models), "rows": rows}, indent=2) + "\n")
    lines = ["# Offline pre-labelling: per-frame against smoothed tags (renders of real annotation streams)", "",
             f"Models: `{args.models}`. A missing tag counts as wrong.", "",
             "| stream | task | frames | vote window | per-frame accuracy | smoothed accuracy |", "|---|---|---|---|---|---|"]
    for r in rows:
        window = "whole recording" if r["window"] is None else f"±{r['window']} frames"
        lines.append(f"| {r['stream']} | {r['task']} | {r['frames']} | {window} | {r['per_frame_accuracy']:.3f} | {r['smoothed_accuracy']:.3f} |")
    (RESULTS / "prelabel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
