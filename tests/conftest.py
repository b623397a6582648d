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
    render_procedural(out, streams=16, frames_per_stream=8, plane_images=24, seed=3, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def procedural_build(procedural_source, tmp_path_factory) -> Path:
    from fpus23_dataset.build import build

    out = tmp_path_factory.mktemp("built") / "fpus23"
    build(procedural_source, out, "1.2.3", progress=False)
    return out
