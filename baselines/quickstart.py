"""`fpus23-baselines quickstart bundles/`: one small model per task, in minutes on a CPU.

What it trains on: procedural recordings whose geometry and tag statistics follow the real
annotations (`fpus23_dataset.synth.procedural_frames`, driven by the committed aggregate table), drawn
by the phantom renderer. Not the embedded demo set: 500 short sweeps (every orientation x protocol x
probe, many times) give the variety a model needs to work on recordings it never saw. What it is for: making the
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
    max_steps: int  # one epoch of at most this many batches: the training set is large, one pass is enough
    batch_size: int
    lr: float
    proposals: int | None = None
    box_representation: int | None = None
    fpn: bool = False
    eval_subset: int = 200  # frames scored on the test and validation splits (thresholds are chosen on the latter)


# Ours, sized to fit 8 minutes on 2 CPU cores (benchmarks/bench_quickstart.py measures it). Orientation
# gets the most steps: its cues (placenta wall, spine side) are small at 0.35x. The detector pools
# from a feature pyramid: its 128-channel regions make the box head ~4x cheaper than the last stage's
# 512 channels (1.10 vs 1.32 GMACs a frame; 119 vs 249 s of training for 300 steps, both timed beside
# other jobs), and arms and legs, ~30 px
# at 0.35x, are seen at stride 8. The time saved buys more steps: on renders of held-out real streams
# 300 steps scored mAP@.5 0.33 and 900 steps 0.48 (one frame in 6 of the 8 streams bench_quickstart uses).
QUICKSTART = {
    "orientation": QuickRecipe("resnet8", 0.35, 160, 16, 1e-3),
    "anatomy": QuickRecipe("resnet8", 0.35, 120, 16, 1e-3),
    "plane": QuickRecipe("resnet8", 0.35, 40, 16, 1e-3),
    "probe": QuickRecipe("resnet8", 0.35, 60, 16, 1e-3),
    "bounds": QuickRecipe("fasterrcnn_resnet10", 0.35, 450, 4, 0.01, proposals=100, box_representation=256, fpn=True,
                          eval_subset=100),
}
# The training set: many short sweeps rather than a few long ones. Consecutive frames are near-
# duplicates, and with 40 streams of 40 frames a classifier learnt the streams (synthetic test
# accuracy 0.36 for orientation) where 500 streams of 8 frames taught it the cues (0.90; 0.91 on
# renders of real annotation streams). Plane-folder images feed the plane config.
TRAINING_SET = {"streams": 500, "frames_per_stream": 8, "plane_images": 160}


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
    # the detector starts from the anatomy classifier's trunk when both are trained (models.load_trunk)
    for task in sorted(tasks, key=lambda t: t == "bounds"):
        recipe = QUICKSTART[task]
        run_dir = out / "runs" / task
        trunk = out / "runs" / "anatomy" if task == "bounds" and "anatomy" in tasks else None
        config = TrainConfig(task=task, arch=recipe.arch, data=str(data), out=str(run_dir), epochs=1,
                             max_steps=recipe.max_steps, batch_size=recipe.batch_size, lr=recipe.lr,
                             image_scale=recipe.image_scale, proposals=recipe.proposals, eval_subset=recipe.eval_subset,
                             box_representation=recipe.box_representation, fpn=recipe.fpn,
                             seed=seed, progress=progress, latency_runs=5, trunk_from=trunk and str(trunk))
        summaries[task] = train(config)
        export_run(run_dir, out / task, force=True)
    return summaries
