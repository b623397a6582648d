"""CVAT exports + images -> a Hugging Face dataset folder: Parquet shards per config and split, card, report.

Top to bottom, once each: read and merge the exports; choose both split protocols from the
annotations alone; read and verify every image once; number the objects; write each config's
shards (a process pool over whole shards); render the card and the report. Everything is written
into a sibling temporary folder that replaces `out` only when complete.

Strict by default: a stream with an export that cannot be read whole stops the build (no output,
the full report in the error). `keep_going` builds the other streams and records the omission in
`build_report.json` and the card. Frame-level problems (missing or corrupt image, bad box) leave
the frame out of the configs it cannot serve, counted with their reason.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections import Counter, defaultdict
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .. import __version__, schema
from ..atomic import check_replaceable, replacing_dir
from ..cvat import Source, discover, read_source
from ..errors import UserError
from ..progress import tqdm
from ..report import Report
from . import splits
from .card import render_card
from .validate import CheckedFrame, check_images, default_workers, relative
from .write import Layout, Row, Shard, layout, write_shard

MAX_SHARD_BYTES = 500 * 1024 * 1024  # the Hub's recommended Parquet shard size is a few hundred MB
BUILD_MARKER = "build_report.json"


class BuildError(UserError):
    pass


@dataclass
class BuildResult:
    out: Path
    version: str
    counts: dict[str, dict[str, Counter]]  # config -> split -> class -> rows ("__rows__": frames of bounds)
    report: Report
    fingerprint: str
    frames_read: int
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes

    @property
    def bytes_written(self) -> int:
        return sum(self.files.values())

    def class_counts(self) -> dict[str, dict[str, Counter]]:
        """The counts in `release.tables.class_counts` form (bounds: boxes per class and '(frames)')."""
        out: dict[str, dict[str, Counter]] = {}
        for config, per_split in self.counts.items():
            out[config] = {}
            for split in (s for s in schema.SPLITS if s in per_split):
                counter = Counter(per_split[split])
                if config == schema.DETECTION_TASK:
                    counter["(frames)"] = counter.pop("__rows__", 0)
                out[config][split] = counter
        return out


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
    with _processes(workers or default_workers()) as pool, ThreadPoolExecutor(1) as thread:
        # The layouts need `datasets` (a second to import): imported in a thread while the workers,
        # started without it, parse the exports.
        layouts = thread.submit(lambda: {config: layout(config) for config in configs})
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
    source_path = source.root
    if report.omitted and not keep_going:
        raise BuildError(f"{source_path}: {len(report.omitted)} stream(s) have an export that cannot be read whole, so "
                         f"nothing was written; fix or remove them, or pass --keep-going to build without them\n"
                         + report.format_text())
    if not frames:
        raise BuildError(f"{source_path}: nothing usable (no frame with an image and a label)\n" + report.format_text())
    groups = splits.stream_split(frames, seed)
    paper = {config: splits.paper_split([f.image_id for f in frames if config in f.configs], config, seed)
             for config in schema.CONFIGS}
    selected = [frame for frame in frames if set(frame.configs) & set(configs)]
    checked = check_images(selected, source, report, progress=progress, mapper=mapper)
    for config in set(report.excluded) - set(configs):
        del report.excluded[config]
    if not checked:
        raise BuildError(f"{source_path}: nothing usable: no image could be read\n" + report.format_text())

    rows, counts = _plan_rows(checked, groups, paper, configs)
    result = BuildResult(out, version, counts, report, _fingerprint(source, checked), len(checked))
    report.totals["frames_with_rows"] = len(checked)
    with replacing_dir(result.out, BUILD_MARKER) as temporary:
        shards = _shards(temporary, rows, max_shard_bytes, layouts.result())
        result.files = _write(shards, temporary, pool, progress)
        sizes = {(config, split): (len(rows[config][split]), sum(r.image_size for r in rows[config][split]))
                 for config in rows for split in rows[config]}
        card = render_card(version=version, fingerprint=result.fingerprint, layout=source.layout, frames=len(checked),
                           counts=counts, report=report, sizes=sizes, files=result.files)
        (temporary / "README.md").write_text(card, encoding="utf-8")
        report_dict = report.to_dict()
        for issue in report_dict["issues"]:
            issue["file"] = relative(issue["file"], source.root)
        (temporary / BUILD_MARKER).write_text(json.dumps(
            {"version": version, "builder": f"fpus23 {__version__}", "source_layout": source.layout,
             "source_fingerprint": result.fingerprint, "report": report_dict}, indent=2) + "\n", encoding="utf-8")
    return result


def _plan_rows(checked: list[CheckedFrame], groups: dict[str, str], paper: dict[str, dict[str, str]],
               configs: Sequence[str]) -> tuple[dict[str, dict[str, list[Row]]], dict[str, dict[str, Counter]]]:
    """config -> split -> rows, in frame order; objects numbered over the whole build, split by split."""
    by_split: dict[str, list[CheckedFrame]] = defaultdict(list)
    for item in checked:
        by_split[groups[item.frame.split_group]].append(item)
    rows: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    index = {config: {name: k for k, name in enumerate(schema.class_names(config))} for config in schema.CONFIGS}
    probes = {name: k for k, name in enumerate(schema.PROBE.classes)}
    next_id = 1
    for split in schema.SPLITS:
        for item in by_split.get(split, []):
            frame, info = item.frame, item.info
            probe = probes.get(frame.labels.get("probe", ""))
            for config in frame.configs:
                if config not in configs:
                    continue
                if config == schema.DETECTION_TASK:
                    target = [{"id": next_id + k, "bbox": [round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2)],
                               "category": index[config][b.category], "area": round(b.area, 2)}
                              for k, b in enumerate(frame.boxes)]
                    next_id += len(frame.boxes)
                    counts[config][split]["__rows__"] += 1
                    counts[config][split].update(b.category for b in frame.boxes)
                else:
                    target = index[config][frame.labels[config]]
                    counts[config][split][frame.labels[config]] += 1
                rows[config][split].append(Row(
                    str(frame.image_path), info.size, f"{frame.stream}/{frame.name}", frame.image_id, frame.stream,
                    frame.index, probe, info.width, info.height, paper[config][frame.image_id], target))
    return {c: dict(s) for c, s in rows.items()}, {c: dict(s) for c, s in counts.items()}


def _shards(root: Path, rows: dict[str, dict[str, list[Row]]], max_shard_bytes: int, layouts: dict[str, Layout]) -> list[Shard]:
    """Each config's split cut into shards of about equal bytes, at most `max_shard_bytes` each."""
    shards = []
    for config in schema.CONFIGS:
        for split in (s for s in schema.SPLITS if rows.get(config, {}).get(s)):
            split_rows = rows[config][split]
            total = sum(row.image_size for row in split_rows)
            count = max(1, math.ceil(total / max_shard_bytes))
            cuts, done, start = [], 0, 0
            for position, row in enumerate(split_rows):
                done += row.image_size
                if done >= total * (len(cuts) + 1) / count and len(cuts) < count - 1:
                    cuts.append((start, position + 1))
                    start = position + 1
            cuts.append((start, len(split_rows)))
            for number, (begin, end) in enumerate(cuts):
                path = root / config / f"{split}-{number:05d}-of-{len(cuts):05d}.parquet"
                shards.append(Shard(path, config, split_rows[begin:end], layouts[config]))
    return shards


def _write(shards: list[Shard], root: Path, pool: ProcessPoolExecutor | None, progress: bool) -> dict[str, int]:
    """Write the shards, the largest first, each a whole unit of work for the pool."""
    order = sorted(shards, key=lambda s: -sum(r.image_size for r in s.rows))
    files: dict[str, int] = {}
    results = [pool.submit(write_shard, shard) for shard in order] if pool is not None else None
    with tqdm(total=sum(len(s.rows) for s in shards), desc="write", unit="row", disable=not progress, mininterval=0.5) as bar:
        try:
            for k, shard in enumerate(order):
                files[shard.path.relative_to(root).as_posix()] = results[k].result() if results else write_shard(shard)
                bar.update(len(shard.rows))
        except BaseException:
            for future in results or []:
                future.cancel()
            wait(results or [])  # no shard may still be writing when the caller removes the folder
            raise
    return dict(sorted(files.items()))


def _fingerprint(source: Source, checked: list[CheckedFrame]) -> str:
    """SHA-256 over every export's bytes and every image's content digest."""
    digest = hashlib.sha256()
    for xml in sorted(xml for s in source.streams.values() for xml in s.xml_files):
        digest.update(f"xml {relative(xml, source.root)} {hashlib.sha256(xml.read_bytes()).hexdigest()}\n".encode())
    for image_id, image_digest in sorted((c.frame.image_id, c.info.digest) for c in checked):
        digest.update(f"image {image_id} {image_digest}\n".encode())
    return digest.hexdigest()


def _check_version(version: str) -> None:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BuildError(f"version {version!r}: expected X.Y.Z (semantic version, digits only)")
