from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FPUS23_SHARED", REPO.parent / "shared"))
ANNOTATIONS = SHARED / "fpus23-annotations"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def require_shared() -> Path:
    if not ANNOTATIONS.is_dir():
        pytest.skip(f"real FPUS23 annotations not found at {ANNOTATIONS} (CI has ../shared beside the clone)")
    return ANNOTATIONS


@pytest.fixture(scope="session")
def shared_annotations() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def procedural_source(tmp_path_factory) -> Path:
    from fpus23_dataset.synth import render_procedural

    out = tmp_path_factory.mktemp("procedural") / "src"
    render_procedural(out, streams=16, frames_per_stream=8, plane_images=24, seed=0, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def procedural_build(procedural_source, tmp_path_factory) -> Path:
    from fpus23_dataset.build import build

    out = tmp_path_factory.mktemp("built") / "fpus23"
    build(procedural_source, out, "1.2.3", progress=False)
    return out


QUICK_TRAINING = {
    "orientation": ["--arch", "resnet8", "--epochs", "2", "--max-steps", "6", "--batch-size", "8", "--image-scale", "0.2"],
    "anatomy": ["--arch", "resnet8", "--epochs", "1", "--max-steps", "4", "--batch-size", "8", "--image-scale", "0.2"],
    "plane": ["--arch", "resnet10", "--epochs", "1", "--max-steps", "4", "--batch-size", "8", "--image-scale", "0.2"],
    "probe": ["--arch", "resnet8", "--epochs", "1", "--max-steps", "4", "--batch-size", "8", "--image-scale", "0.2"],
    "bounds": ["--arch", "fasterrcnn_resnet10", "--epochs", "1", "--max-steps", "3", "--batch-size", "2",
               "--image-scale", "0.3", "--proposals", "50", "--lr", "0.01"],
}


@pytest.fixture(scope="session")
def quick_runs(procedural_build, tmp_path_factory) -> Path:
    """Tiny training runs for all four tasks (runs in <root>/<task>) and their bundles (<root>/bundles/<task>)."""
    pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")
    from baselines.cli import main as baselines_main

    root = tmp_path_factory.mktemp("runs")
    for task, options in QUICK_TRAINING.items():
        assert baselines_main(["train", "--task", task, "--data", str(procedural_build), "--out", str(root / task),
                               "--eval-subset", "24", "--latency-runs", "3", "--quiet", *options]) == 0
        assert baselines_main(["export", str(root / task), str(root / "bundles" / task)]) == 0
    return root
