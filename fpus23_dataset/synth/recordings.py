"""Synthetic FPUS23 recordings in the archive layout, for given annotations or invented ones.

`render_annotations` draws a frame for every `<image>` of real CVAT exports (their geometry and
tags), `render_procedural` invents streams with tags, boxes and plane folders. Both write the
FPUS23 archive layout (`four_poses/<stream>/frame_NNNNNN.png`, `annos/annotation/<stream>/`,
`boxes/annotation/<stream>/`, plane folders) so that every reader path is the real one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import schema
from ..atomic import replacing_file
from ..cvat import Box, Frame, SourceError, discover, read_stream, split_export, write_cvat_xml
from ..errors import UserError
from ..report import Report
from ..seeding import stable_seed
from .phantom import DEFAULT_STYLE, FrameSpec, Style, render, spec_from_frame

PNG_COMPRESS_LEVEL = 1  # PNG is lossless at any level; 1 keeps rendering fast


@dataclass(frozen=True)
class RenderJob:
    path: str
    spec: FrameSpec


def _render_chunk(args: tuple[list[RenderJob], int, Style]) -> int:
    jobs, seed, style = args
    for job in jobs:
        pixels = render(job.spec, seed=seed, style=style)
        with replacing_file(job.path) as temporary:
            Image.fromarray(pixels, mode="L").save(temporary, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return len(jobs)


def render_jobs(
    jobs: Sequence[RenderJob], seed: int = 0, style: Style = DEFAULT_STYLE, workers: int | None = None, progress: bool = True
) -> int:
    """Render and write PNGs in parallel; deterministic whatever the scheduling (seeds are per frame)."""
    chunks = [(list(jobs[i : i + 16]), seed, style) for i in range(0, len(jobs), 16)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    with tqdm(total=len(jobs), unit="frame", desc="render", disable=not progress, mininterval=0.5) as bar, \
            (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
        for count in (pool.map if pool is not None else map)(_render_chunk, chunks):
            bar.update(count)
    return len(jobs)


def render_annotations(
    annotations: Path | str,
    out: Path | str,
    seed: int = 0,
    style: Style = DEFAULT_STYLE,
    workers: int | None = None,
    streams: Iterable[str] | None = None,
    progress: bool = True,
) -> Report:
    """Render frames for existing CVAT exports and write the archive layout into `out`."""
    source = discover(annotations)
    out = Path(out)
    report = Report()
    wanted = set(streams) if streams is not None else None
    if wanted is not None and (missing := wanted - set(source.streams)):
        raise SourceError(f"{annotations}: no such stream(s): {', '.join(sorted(missing))}; "
                          f"streams there: {', '.join(sorted(source.streams)[:3])}, ...")
    jobs: list[RenderJob] = []
    for stream in sorted(source.streams):
        if wanted is not None and stream not in wanted:
            continue
        entry = source.streams[stream]
        frames = read_stream(stream, entry.xml_files, report)
        if source.layout == "archive":
            for xml in entry.xml_files:
                target = out / xml.relative_to(source.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(xml, target)
        else:
            split_export(
                entry.xml_files[0],
                out / "annos" / "annotation" / stream / "annotations.xml",
                out / "boxes" / "annotation" / stream / "annotations.xml",
            )
        for frame in frames:
            jobs.append(RenderJob(str(out / "four_poses" / stream / frame.name), spec_from_frame(frame)))
    report.totals["rendered_frames"] = render_jobs(jobs, seed, style, workers, progress)
    return report


# ---------------------------------------------------------------------------------------------
# Procedural recordings

PROTOCOL_ANATOMY = {"aroundhead": "head", "aroundabd": "abdomen", "aroundlegs": "legs", "aroundarms": "arms", "longrec": None}
PROTOCOL_OF = {anatomy: protocol for protocol, anatomy in PROTOCOL_ANATOMY.items() if anatomy}
PROTOCOL_PLANE = {"aroundhead": "bpd", "aroundabd": "ac", "aroundlegs": "fl"}


@lru_cache(maxsize=1)
def annotation_stats() -> dict:
    """Aggregates of the real annotations (box sets, run lengths, quantiles; `tools/annotation_stats.py`)."""
    return json.loads((Path(__file__).with_name("annotation_stats.json")).read_text())


def procedural_stream_names(count: int) -> list[str]:
    """Stream names like the archive's: stream i gets orientation i mod 4, protocol i mod 5 (unique pairs
    for i < 20) and the probe flips every 4 streams, so the first 40 are all combinations; later ones
    repeat them with a number after the protocol (`aroundhead2`), as more sweeps of the same set-up."""
    orientations = schema.ORIENTATION.classes
    protocols = ("aroundhead", "aroundabd", "aroundlegs", "aroundarms", "longrec")
    probes = schema.PROBE.classes
    if not 0 < count <= 1000:
        raise UserError(f"--streams {count}: procedural recordings have between 1 and 1000 streams")
    return [f"stream_{orientations[i % 4]}_{protocols[i % 5]}{i // 40 or ''}_{probes[(i // 4) % 2]}" for i in range(count)]


def procedural_frames(stream: str, frames: int, seed: int = 0) -> list[Frame]:
    """Invented annotations of one sweep following the real annotations' statistics: the protocol's box
    sets come and go (a Markov chain with the real shares and run length); centres and sizes are the real
    quantiles at drifting AR(1) levels (the centre's shared, as the probe moves every box together). A
    short stream drifts faster, so that it spans what a real ~300-frame sweep does."""
    _, orientation, protocol, probe = stream.split("_")
    protocol, stats = protocol.rstrip("0123456789"), annotation_stats()
    table, levels = stats["protocols"][protocol], stats["levels"]
    sets, shares = [s for s, _ in table["box_sets"]], np.array([p for _, p in table["box_sets"]])
    rng = np.random.default_rng(stable_seed("procedural", seed, stream))
    rho = math.exp(-1.0 / max(3.0, frames / 5))
    latent: dict[str, float] = {}
    boxed = sets[int(rng.choice(len(sets), p=shares / shares.sum()))]
    phase, records = float(rng.uniform(0, 2 * math.pi)), []
    for index in range(frames):
        if rng.random() < 1.0 / table["set_run_median"]:
            boxed = sets[int(rng.choice(len(sets), p=shares / shares.sum()))]
        for key in ["cx", "cy"] + [f"{c}.{k}" for c in schema.BOX_CATEGORIES for k in "wh"]:
            latent[key] = rho * latent[key] + math.sqrt(1 - rho**2) * float(rng.normal()) if key in latent else float(rng.normal())
        level = lambda key: 50 * (1 + math.erf(latent[key] / math.sqrt(2)))  # noqa: E731  (normal -> percentile)
        frame = Frame(stream, f"frame_{index:06d}.png", index, schema.FRAME_WIDTH, schema.FRAME_HEIGHT)
        frame.labels = {"orientation": orientation, "probe": probe}
        if (anatomy := PROTOCOL_ANATOMY[protocol]) is not None:
            frame.labels["anatomy"] = anatomy
            if protocol in PROTOCOL_PLANE and abs(math.sin(2 * math.pi * index / max(frames, 1) + phase)) < 0.25:
                frame.labels["plane"] = PROTOCOL_PLANE[protocol]  # the standard plane is crossed mid-sweep
        for category in boxed:
            q = table["boxes"][category]
            cx, cy = (float(np.interp(level(k), levels, q[k])) for k in ("cx", "cy"))
            w, h = (float(np.interp(level(f"{category}.{k}"), levels, q[k])) for k in "wh")
            frame.boxes.append(Box(category, cx - w / 2, cy - h / 2, w, h))
        records.append(_clipped(frame))
    return records


def _clipped(frame: Frame) -> Frame:
    kept = []
    for b in frame.boxes:
        x0, y0 = max(0.0, b.x), max(0.0, b.y)
        x1, y1 = min(float(schema.FRAME_WIDTH), b.x + b.w), min(float(schema.FRAME_HEIGHT), b.y + b.h)
        if x1 - x0 > 4 and y1 - y0 > 4:
            kept.append(Box(b.category, round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)))
    frame.boxes = kept
    return frame


def plane_folder_frames(per_plane: int, streams_per_plane: int = 3, seed: int = 0) -> list[tuple[str, Frame]]:
    """Frames for the plane folders: (folder, frame) with a stream per few images, as `<stream>_<frame>`."""
    out = []
    anatomy_of = {"ac": "abdomen", "bpd": "head", "fl": "legs", "no_plane": None}
    orientations = schema.ORIENTATION.classes
    for plane in schema.PLANE.classes:
        folder = schema.PLANE_FOLDER_OF[plane]
        for k in range(streams_per_plane):
            orientation = orientations[(k + len(out)) % 4]
            probe = schema.PROBE.classes[k % 2]
            stream = f"stream_{orientation}_planes{plane.replace('_', '')}{k}_{probe}"
            count = per_plane // streams_per_plane + (1 if k < per_plane % streams_per_plane else 0)
            rng = np.random.default_rng(stable_seed("planes", seed, stream))
            for index in range(count):
                frame = Frame(stream, f"frame_{index:06d}.png", index, schema.FRAME_WIDTH, schema.FRAME_HEIGHT)
                frame.labels = {"plane": plane, "orientation": orientation, "probe": probe}
                anatomy = anatomy_of[plane] or str(rng.choice(["head", "abdomen", "legs"]))
                w, h = (annotation_stats()["protocols"][PROTOCOL_OF[anatomy]]["boxes"][anatomy][d][4] for d in "wh")
                cx = schema.FRAME_WIDTH / 2 + float(rng.uniform(-40, 40))
                cy = schema.FRAME_HEIGHT / 2 + float(rng.uniform(-15, 15))
                frame.boxes = [Box(anatomy, cx - w / 2, cy - h / 2, w, h)]
                out.append((folder, _clipped(frame)))
    return out


def render_procedural(out: Path | str, streams: int = 16, frames_per_stream: int = 30, plane_images: int = 36,
                      seed: int = 0, style: Style = DEFAULT_STYLE, workers: int | None = None,
                      progress: bool = True) -> Report:
    """Invent `streams` recordings and plane folders, render them and write the archive layout."""
    out = Path(out)
    report = Report()
    jobs: list[RenderJob] = []
    for stream in procedural_stream_names(streams):
        frames = procedural_frames(stream, frames_per_stream, seed)
        write_cvat_xml(out / "annos" / "annotation" / stream / "annotations.xml", stream, frames, boxes=False)
        if any(f.boxes for f in frames):
            write_cvat_xml(out / "boxes" / "annotation" / stream / "annotations.xml", stream, frames, tags=False)
        for frame in frames:
            jobs.append(RenderJob(str(out / "four_poses" / stream / frame.name), spec_from_frame(frame)))
    for folder, frame in plane_folder_frames(plane_images, seed=seed):
        # Plane folders hold images only: the tags above are what the drawing shows, not annotations.
        spec = spec_from_frame(frame)
        jobs.append(RenderJob(str(out / folder / f"{frame.stream}_{frame.name}"), spec))
    report.totals["rendered_frames"] = render_jobs(jobs, seed, style, workers, progress)
    return report
