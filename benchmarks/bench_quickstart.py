"""How long the quickstart takes and how good its bundles are on recordings they never saw.

    .venv/bin/python benchmarks/bench_quickstart.py --out /tmp/qs-bench            # time the quickstart, then score
    .venv/bin/python benchmarks/bench_quickstart.py --bundles bundles/ --render R  # score existing bundles

The quickstart trains on procedural recordings only, so every real annotation stream is held out.
The held-out set: renders of real annotation streams (`fpus23 synth --annotations`; their own
geometry and tag sequences), two per orientation, every protocol and both probe directions, scored
through `load_bundle(...).predict` as the CVAT plugin would. Targets (issue 15): orientation
accuracy >= 0.8, bounds mAP@.5 >= 0.3, boxes present at the default threshold, quickstart <= 8 min
on 2 idle cores. Results: benchmarks/results/quickstart.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FPUS23_SHARED", REPO.parent / "shared")) / "fpus23-annotations"
RESULTS = REPO / "benchmarks" / "results"
HELD_OUT = ["stream_hdvb_aroundabd_h", "stream_hdvb_longrec_v", "stream_hdvf_aroundarms_h", "stream_hdvf_aroundhead_v",
            "stream_huvb_aroundhead_v", "stream_huvb_aroundlegs_h", "stream_huvf_aroundlegs_v", "stream_huvf_aroundabd_h"]
TARGETS = {"orientation": ("accuracy", 0.8), "bounds": ("mAP50", 0.3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="run `fpus23-baselines quickstart OUT` (timed) and score its bundles")
    parser.add_argument("--bundles", type=Path, help="score these bundles instead (no quickstart run)")
    parser.add_argument("--render", type=Path, default=Path("/tmp/fpus23-heldout"), help="held-out render (made if absent)")
    parser.add_argument("--every", type=int, default=3, help="score one frame in EVERY per stream")
    args = parser.parse_args()
    if (args.out is None) == (args.bundles is None):
        parser.error("give --out (run the quickstart) or --bundles (score existing bundles)")

    from baselines.heldout import score_bundles
    from fpus23_dataset.synth import render_annotations

    quickstart_seconds, load = None, os.getloadavg()
    bundles = args.bundles
    if args.out is not None:
        started = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "fpus23-baselines"), "quickstart", str(args.out), "--quiet"], check=True)
        quickstart_seconds = round(time.perf_counter() - started, 1)
        bundles = args.out
    if not args.render.is_dir():
        render_annotations(SHARED, args.render, streams=HELD_OUT)
    scores = score_bundles(bundles, args.render, HELD_OUT, every=args.every)
    result = {"bundles": str(bundles), "quickstart_seconds": quickstart_seconds, "load_average_before": load,
              "cpus": os.cpu_count(), "held_out_streams": HELD_OUT, "every": args.every, "scores": scores}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Quickstart: time, and its bundles on renders of held-out real annotation streams", "",
             f"Quickstart: {quickstart_seconds or 'not timed here'} s (target <= 480 s on 2 idle cores; load average "
             f"before: {load[0]:.1f}, {os.cpu_count()} CPUs). Held-out streams: {', '.join(HELD_OUT)}; one frame in "
             f"{args.every}.", "", "| task | model | frames | score | chance / target |", "|---|---|---|---|---|"]
    for task, s in scores.items():
        if task == "bounds":
            lines.append(f"| bounds | {s['arch']} | {s['frames']} | mAP@.5 {s['mAP50']:.3f}, mAP {s['mAP']:.3f}, "
                         f"boxes present at the default threshold on {s['boxes_present_at_default_threshold']:.0%} of "
                         f"boxed frames, per-class AP@[.5:.95]; AP@.5: " + ", ".join(
                             f"{k} {v:.3f}; {s['per_class_AP50'][k]:.3f}" for k, v in s["per_class_AP"].items())
                         + " | target mAP@.5 >= 0.3 |")
        else:
            target = f" / target >= {TARGETS[task][1]}" if task in TARGETS else ""
            lines.append(f"| {task} | {s['arch']} | {s['frames']} | accuracy {s['accuracy']:.3f} | {s['chance']:.2f}{target} |")
    lines += ["", "Per-stream accuracy: see quickstart.json."]
    (RESULTS / "quickstart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
