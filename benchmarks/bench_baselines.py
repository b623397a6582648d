"""Training throughput (images/s) per architecture and inference latency per frame, on this machine.

    .venv/bin/python benchmarks/bench_baselines.py [--steps 5] [--archs resnet8 resnet34 ...]

Synthetic tensors at each architecture's default input size (the size `train` uses when
--image-scale is not given), so the figures measure the model, not the data pipeline. Also times
one full pipeline step (PNG decode + resize + forward/backward) on real rows if --data is given.
Results: benchmarks/results/baselines.json and baselines.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines.cost import (  # noqa: E402
    busy_warning, count_macs, cpu_latency, latency_text, machine_load, macs_at_paper_convention, parameter_memory_mb,
)
from baselines.data import InputSpec  # noqa: E402
from baselines.models import CLASSIFIER_ARCHS, DETECTOR_ARCHS, build_model, default_image_scale  # noqa: E402


def train_throughput(model, spec: InputSpec, detector: bool, batch: int, steps: int) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.rand(batch, 1, spec.height, spec.width)
    labels = torch.randint(0, 4, (batch,))
    boxes = torch.tensor([[0.2, 0.2, 0.6, 0.7]]) * torch.tensor([spec.width, spec.height, spec.width, spec.height])
    targets = [{"boxes": boxes, "labels": torch.tensor([1])} for _ in range(batch)]
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        if detector:
            loss = sum(model(list(images), targets).values())
        else:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(CLASSIFIER_ARCHS + DETECTOR_ARCHS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--proposals", type=int, default=None, help="detector proposals (default torchvision's)")
    args = parser.parse_args()
    rows = []
    warning = busy_warning(machine_load(), "the benchmark")  # cpu_latency warns again per model if still busy
    if warning:
        print(warning, file=sys.stderr, flush=True)
    for arch in args.archs:
        detector = arch in DETECTOR_ARCHS
        scale = default_image_scale(arch)
        spec = InputSpec.at_scale(scale)
        model = build_model("bounds" if detector else "orientation", arch, 4, "scratch", (spec.height, spec.width), args.proposals)
        example = torch.rand(1, 1, spec.height, spec.width)
        latency = cpu_latency(model, example, detector, args.latency_runs, what=f"{arch} latency")
        row = {
            "arch": arch, "input": f"{spec.height}x{spec.width} (scale {scale})", "threads": torch.get_num_threads(),
            "macs_g": round(count_macs(model, example, detector) / 1e9, 3),
            "macs_224x224x3_g": round(macs_at_paper_convention(model, detector) / 1e9, 3),
            "memory_mb": round(parameter_memory_mb(model), 2),
            "train_images_per_s": round(train_throughput(model, spec, detector, 4 if detector else 16, args.steps), 2),
            "latency_ms_per_frame": round(latency["median_ms"], 2),  # median; spread and load below
            "latency": latency,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Baselines on this CPU", "",
             "| arch | input | MACs (G) | MACs @224×224×3 (paper convention, G) | memory (MB) | train images/s | "
             "latency ms/frame: median (p10–p90, load) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['input']} | {r['macs_g']} | {r['macs_224x224x3_g']} | {r['memory_mb']} | "
              f"{r['train_images_per_s']} | {latency_text(r['latency'])} |" for r in rows]
    if any(r["latency"]["busy"] for r in rows):
        lines += ["", "Measured on a busy machine (1-min load average above half the CPUs): latency figures are unreliable."]
    (out / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
