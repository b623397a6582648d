"""`fpus23-baselines quickstart bundles/`: one small model per task, in minutes on a CPU.

What it trains on: procedural recordings whose geometry and tag statistics follow the real
annotations (`fpus23_dataset.synth.procedural_frames`, driven by the committed aggregate table), drawn
by the phantom renderer. Not the embedded demo set: 40 short streams (every orientation x protocol x
probe) give the variety a model needs to work on recordings it never saw. What it is for: making the
CVAT plugin and FiftyOne demos meaningful. It is not a research result; `fpus23-baselines reproduce`
and `train` are. `benchmarks/bench_quickstart.py` measures the bundles on renders of real annotation
streams (held out by construction: the quickstart never reads them).

Layout written into `out`: `<task>/` bundles (the names the README's examples use), `runs/<task>/`
run folders, `training-data/` the built dataset. The recipes are ours (small inputs, few steps).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fpus23_dataset.build import build
from fpus23_dataset.synth import render_procedural

from .bundle import export_run
from .train import TrainConfig, train


@dataclass(frozen=True)
class QuickRecipe:
    arch: str
    image_scale: float
    epochs: int
    max_steps: int  # per epoch
    batch_size: int
    lr: float
    proposals: int | None = None


QUICKSTART = {
    "orientation": QuickRecipe("resnet8", 0.35, 3, 60, 16, 1e-3),
    "anatomy": QuickRecipe("resnet8", 0.35, 3, 60, 16, 1e-3),
    "plane": QuickRecipe("resnet8", 0.35, 3, 20, 16, 1e-3),
    "probe": QuickRecipe("resnet8", 0.35, 2, 40, 16, 1e-3),
    "bounds": QuickRecipe("fasterrcnn_resnet10", 0.5, 3, 60, 4, 0.01, 100),
}
# The training set: every orientation x protocol x probe once (40 streams), frames per stream, and
# plane-folder images (the plane config comes from those).
TRAINING_SET = {"streams": 40, "frames_per_stream": 40, "plane_images": 160}


def training_data(out: Path, seed: int = 0, progress: bool = True) -> Path:
    """Render and build the quickstart's training set into `out` (kept; the render is not)."""
    with tempfile.TemporaryDirectory(prefix="fpus23-quickstart-") as rendered:
        render_procedural(rendered, seed=seed, progress=progress, **TRAINING_SET)
        build(rendered, out, "0.0.0", seed=seed, progress=progress)
    return out


def quickstart(out: Path | str, data: Path | str | None = None, tasks: Sequence[str] = tuple(QUICKSTART), seed: int = 0,
               progress: bool = True) -> dict[str, dict]:
    """Train and export one bundle per task into `out/<task>`; returns each run's summary."""
    out = Path(out)
    if data is None:
        data = out / "training-data"
        if not (data / "README.md").is_file():
            print(f"rendering and building the quickstart's training set into {data} ...")
            training_data(data, seed, progress)
    summaries = {}
    for task in tasks:
        recipe = QUICKSTART[task]
        run_dir = out / "runs" / task
        config = TrainConfig(task=task, arch=recipe.arch, data=str(data), out=str(run_dir), epochs=recipe.epochs,
                             max_steps=recipe.max_steps, batch_size=recipe.batch_size, lr=recipe.lr,
                             image_scale=recipe.image_scale, proposals=recipe.proposals, seed=seed, progress=progress,
                             latency_runs=5)
        summaries[task] = train(config)
        export_run(run_dir, out / task, force=True)
    return summaries
