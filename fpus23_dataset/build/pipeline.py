"""CVAT exports + images -> a Hugging Face dataset folder: Parquet files per config and split, card, report.

Top to bottom: parse the exports; choose both split protocols and number the objects from the
annotations alone; read, check and write every image once (a process pool over runs of frames);
card and report. All of it in a sibling temporary folder that replaces `out` only when complete.
Strict by default: a stream with an export that cannot be read whole stops the build (no output, the
full report in the error); `keep_going` builds the rest and records the omission in the report and
card. A frame whose image is missing or corrupt, or a bad box, is left out and counted with its reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from .. import __version__, schema
from ..atomic import check_replaceable, replacing_dir
from ..cvat import Frame, Source, discover, read_source
from ..errors import UserError
from ..report import Report
from . import splits
from .card import render_card
from .validate import default_workers, relative
from .write import Layout, Planned, Unit, UnitResult, layouts_of, write_unit

MAX_SHARD_BYTES = 256 * 1024 * 1024  # images per file at most (the Hub suggests Parquet files of a few hundred MB)
BUILD_MARKER = "build_report.json"


class BuildError(UserError):
    pass


@dataclass
class BuildResult:
    out: Path
    version: str
    counts: dict[str, dict[str, Counter]]  # config -> split -> class -> rows (bounds: boxes, and "(frames)")
    report: Report
    fingerprint: str
    frames_read: int
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes


def build(
    source_path: Path | str | None,
    out: Path | str,
    version: str,
    *,
    seed: int = 0,
    progress: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    configs: Sequence[str] = schema.CONFIGS,
    keep_going: bool = False,
    workers: int | None = None,
) -> BuildResult:
    """Build the dataset folder `out` from a source (None: the embedded synthetic default).

    `configs` picks which configs to write; splits, shards and object ids are those of the full
    build, so each config's files are byte-identical to the same config's files in a full build.
    """
    _check_version(version)
    unknown = sorted(set(configs) - set(schema.CONFIGS))
    if unknown or not configs:
        raise BuildError(f"configs {unknown or list(configs)}: choose among {', '.join(schema.CONFIGS)}")
    check_replaceable(Path(out).absolute(), BUILD_MARKER)
    if source_path is None:
        from ..synth import render_procedural

        with tempfile.TemporaryDirectory(prefix="fpus23-default-") as rendered:
            render_procedural(rendered, seed=seed, progress=progress, workers=workers)
            return build(rendered, out, version, seed=seed, progress=progress, max_shard_bytes=max_shard_bytes,
                         configs=configs, keep_going=keep_going, workers=workers)
    source = discover(source_path)
    with _processes(workers or default_workers()) as pool:
        # The layouts need `datasets` (a second to import): one worker imports it while the others
        # parse the exports, and this process, which merges what they parse, never does.
        layouts = pool.submit(layouts_of, configs) if pool is not None else Future()
        if pool is None:
            layouts.set_result(layouts_of(configs))
        return _build(source, Path(out).absolute(), version, seed, progress, max_shard_bytes, configs, keep_going,
                      pool, layouts)


@contextmanager
def _processes(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """One process pool for the whole build (parse, check, write), its workers started now, while this
    process runs no other thread; None for one worker (everything here)."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(workers) as pool:
        pool.submit(os.getpid).result()
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _build(source: Source, out: Path, version: str, seed: int, progress: bool, max_shard_bytes: int,
           configs: Sequence[str], keep_going: bool, pool: ProcessPoolExecutor | None, layouts: Future) -> BuildResult:
    mapper = pool.map if pool is not None else map
    report = Report()
    frames = [frame for frame in read_source(source, report, mapper=mapper) if frame.configs]
    if report.omitted and not keep_going:
        raise BuildError(f"{source.root}: {len(report.omitted)} stream(s) have an export that cannot be read whole, so "
                         f"nothing was written; fix or remove them, or pass --keep-going to build without them\n"
                         + report.format_text())
    if not frames:
        raise BuildError(f"{source.root}: nothing usable (no frame with an image and a label)\n" + report.format_text())
    groups = splits.stream_split(frames, seed)
    paper = {config: splits.paper_split([f.image_id for f in frames if config in f.configs], config, seed)
             for config in schema.CONFIGS}
    with replacing_dir(out, BUILD_MARKER) as temporary:
        units = _plan_units(frames, groups, paper, configs, max_shard_bytes, layouts.result(), source.root, temporary)
        results = _write(units, pool, progress)
        for unit_result in results:
            report.merge(unit_result.report)
        digests = sorted(d for r in results for d in r.digests)
        if not digests:
            raise BuildError(f"{source.root}: nothing usable: no image could be read\n" + report.format_text())
        for config in set(report.excluded) - set(configs):
            del report.excluded[config]
        report.totals["frames_with_rows"] = len(digests)
        counts, sizes, files = _name_files(units, results, temporary)
        result = BuildResult(out, version, counts, report, _fingerprint(source, digests), len(digests), files)
        card = render_card(version=version, fingerprint=result.fingerprint, layout=source.layout, frames=len(digests),
                           counts=counts, report=report, sizes=sizes, files=files)
        (temporary / "README.md").write_text(card, encoding="utf-8")
        report_dict = report.to_dict()
        for issue in report_dict["issues"]:
            issue["file"] = relative(issue["file"], source.root)
        (temporary / BUILD_MARKER).write_text(json.dumps(
            {"version": version, "builder": f"fpus23 {__version__}", "source_layout": source.layout,
             "source_fingerprint": result.fingerprint, "report": report_dict}, indent=2) + "\n", encoding="utf-8")
    return result


def _plan_units(frames: list[Frame], groups: dict[str, str], paper: dict[str, dict[str, str]], configs: Sequence[str],
                unit_bytes: int, layouts: dict[str, Layout], root: Path, folder: Path) -> list[Unit]:
    """Each split's frames in order, cut into runs of about `unit_bytes` of images: the files of a
    config hold one run each. Runs and object ids follow from all frames of the source, whichever
    configs are written, so a config's files are the same in a full build and in a subset."""
    by_split: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_split[groups[frame.split_group]].append(frame)
    units, next_id = [], 1
    for split in schema.SPLITS:
        run: list[Planned] = []
        size = 0
        for frame in by_split.get(split, []):
            try:
                image_size = os.stat(frame.image_path).st_size
            except OSError:
                image_size = 0  # reported when the unit reads it
            if run and size + image_size > unit_bytes:
                units.append(Unit(split, sum(u.split == split for u in units), run, configs, layouts, folder, root))
                run, size = [], 0
            run.append(Planned(frame, image_size, {c: paper[c][frame.image_id] for c in frame.configs}, next_id))
            size += image_size
            next_id += len(frame.boxes)
        if run:
            units.append(Unit(split, sum(u.split == split for u in units), run, configs, layouts, folder, root))
    return units


def _write(units: list[Unit], pool: ProcessPoolExecutor | None, progress: bool) -> list[UnitResult]:
    """Write the units, each a whole piece of work for the pool; results in unit order."""
    futures = [pool.submit(write_unit, unit) for unit in units] if pool is not None else None
    results = []
    with tqdm(total=sum(len(u.frames) for u in units), desc="build", unit="frame", disable=not progress, mininterval=0.5) as bar:
        try:
            for k, unit in enumerate(units):
                results.append(futures[k].result() if futures else write_unit(unit))
                bar.update(len(unit.frames))
        except BaseException:
            for future in futures or []:
                future.cancel()
            wait(futures or [])  # no unit may still be writing when the caller removes the folder
            raise
    return results


def _name_files(units: list[Unit], results: list[UnitResult], root: Path):
    """Each config's unit files renamed `<config>/<split>-NNNNN-of-NNNNN.parquet`, in unit order; with
    the counts (config -> split -> class), the card's split sizes and each file's size."""
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    sizes: dict[tuple[str, str], tuple[int, int]] = {}
    files: dict[str, int] = {}
    for config in schema.CONFIGS:
        for split in schema.SPLITS:
            written = [(r.files[config], r.counts.get(config, Counter())) for u, r in zip(units, results)
                       if u.split == split and config in r.files]
            for number, ((path, rows, image_bytes), counter) in enumerate(written):
                name = f"{config}/{split}-{number:05d}-of-{len(written):05d}.parquet"
                os.replace(path, root / name)
                files[name] = (root / name).stat().st_size
                counts[config][split].update(counter)
                old = sizes.get((config, split), (0, 0))
                sizes[(config, split)] = (old[0] + rows, old[1] + image_bytes)
    return {c: dict(s) for c, s in counts.items()}, sizes, dict(sorted(files.items()))


def _fingerprint(source: Source, digests: list[tuple[str, str]]) -> str:
    """SHA-256 over every export's bytes and every image's content digest."""
    digest = hashlib.sha256()
    for xml in sorted(xml for s in source.streams.values() for xml in s.xml_files):
        digest.update(f"xml {relative(xml, source.root)} {hashlib.sha256(xml.read_bytes()).hexdigest()}\n".encode())
    for image_id, image_digest in digests:
        digest.update(f"image {image_id} {image_digest}\n".encode())
    return digest.hexdigest()


def _check_version(version: str) -> None:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BuildError(f"version {version!r}: expected X.Y.Z (semantic version, digits only)")
