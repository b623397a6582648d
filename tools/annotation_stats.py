"""Regenerate `fpus23_dataset/synth/annotation_stats.json` from the real FPUS23 annotations.

    .venv/bin/python tools/annotation_stats.py ../shared/fpus23-annotations

The table holds only aggregate statistics (quantiles, shares, run lengths), never an annotation: it lets
procedural recordings (`fpus23 synth`, the quickstart's training set) and the detector's anchors follow
the real geometry without shipping the annotations. Per recording protocol (the stream name's
`aroundhead`, `aroundabd`, ..., `longrec`): which sets of anatomies are boxed together and how long a set
lasts; per protocol and anatomy: quantiles of the box centre and size.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fpus23_dataset.cvat import discover, read_stream  # noqa: E402
from fpus23_dataset.report import Report  # noqa: E402

OUT = REPO / "fpus23_dataset" / "synth" / "annotation_stats.json"
LEVELS = [0, 5, 10, 25, 50, 75, 90, 95, 100]


def protocol_of(stream: str) -> str:
    return stream.split("_")[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path, help="folder of real CVAT exports (e.g. ../shared/fpus23-annotations)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    source = discover(args.annotations)
    sets: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    runs: dict[str, list[int]] = collections.defaultdict(list)
    geometry: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    steps: dict[str, list[float]] = collections.defaultdict(list)
    frames_per_stream: dict[str, list[int]] = collections.defaultdict(list)
    sides, aspects, total = [], [], 0
    for stream, entry in sorted(source.streams.items()):
        protocol = protocol_of(stream)
        frames = read_stream(stream, entry.xml_files, Report())
        frames_per_stream[protocol].append(len(frames))
        previous, run, last_boxes = None, 0, {}
        for frame in frames:
            total += 1
            boxed = tuple(sorted({b.category for b in frame.boxes}))
            sets[protocol][boxed] += 1
            if boxed != previous and previous is not None:
                runs[protocol].append(run)
                run = 0
            previous, run = boxed, run + 1
            boxes = {}
            for b in frame.boxes:
                g = geometry[(protocol, b.category)]
                for key, value in (("cx", b.x + b.w / 2), ("cy", b.y + b.h / 2), ("w", b.w), ("h", b.h)):
                    g[key].append(value)
                sides.append((b.w * b.h) ** 0.5)
                aspects.append(b.h / b.w)
                boxes.setdefault(b.category, b)
            for category, b in boxes.items():  # frame-to-frame centre motion of a class's first box
                if category in last_boxes:
                    a = last_boxes[category]
                    steps[category].append(abs((b.x + b.w / 2) - (a.x + a.w / 2)))
            last_boxes = boxes
        runs[protocol].append(run)
    quantiles = lambda values: [round(float(v), 1) for v in np.percentile(values, LEVELS)]  # noqa: E731
    table = {
        "source": f"{len(source.streams)} streams, {total} frames of the FPUS23 annotations (tools/annotation_stats.py)",
        "levels": LEVELS,
        "box_side": quantiles(sides),
        "box_aspect_h_over_w": [round(float(v), 2) for v in np.percentile(aspects, LEVELS)],
        "centre_step_median": {k: round(float(np.median(v)), 1) for k, v in sorted(steps.items())},
        "protocols": {
            protocol: {
                "frames_per_stream": sorted(frames_per_stream[protocol]),
                "set_run_median": float(np.median(runs[protocol])),
                "box_sets": [[list(s), round(n / sum(counter.values()), 4)] for s, n in counter.most_common()],
                "boxes": {category: {key: quantiles(values) for key, values in geometry[(protocol, category)].items()}
                          for (p, category) in sorted(geometry) if p == protocol},
            }
            for protocol, counter in sorted(sets.items())
        },
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"written {args.out} ({args.out.stat().st_size:,} bytes) from {total} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
