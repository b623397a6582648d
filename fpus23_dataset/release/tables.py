"""Read a built dataset's rows straight from its Parquet shards (`<config>/<split>-*.parquet`)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..errors import NotABuildError, UserError


def shard_files(path: Path | str, config: str) -> dict[str, list[Path]]:
    """split -> the shard files of `config`, in order ({} if the build has no such config)."""
    root = Path(path)
    schema.class_names(config)  # validates the config name
    if not root.is_dir() or not any((root / c).is_dir() for c in schema.CONFIGS):
        raise NotABuildError(f"{path}: not an fpus23 build (no <config>/ folders of Parquet files); "
                             f"build one with `fpus23 build SOURCE --out {path}`")
    out: dict[str, list[Path]] = {}
    for file in sorted((root / config).glob("*.parquet")):
        out.setdefault(file.name.split("-")[0], []).append(file)
    return {s: out[s] for s in schema.SPLITS if s in out}


def config_rows(files: list[Path]) -> int:
    """Rows in some shard files, from their footers."""
    return sum(pq.ParquetFile(file).metadata.num_rows for file in files)


def iter_batches(files: list[Path], columns: list[str], batch_size: int = 64) -> Iterator[pa.RecordBatch]:
    """Rows of some shard files, in stored order, `batch_size` at most at a time."""
    for file in files:
        with pq.ParquetFile(file) as parquet:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)


def read_labels(path: Path | str, config: str) -> dict[str, dict]:
    """image_id -> {"split", "paper_split", "label" | "objects", "stream", "frame"} for one config."""
    columns = ["image_id", "stream", "frame", "paper_split", "width", "height"] + (["objects"] if config == "bounds" else ["label"])
    rows: dict[str, dict] = {}
    classes = schema.class_names(config)
    for split, files in shard_files(path, config).items():
        for batch in iter_batches(files, columns, batch_size=4096):
            for record in batch.to_pylist():
                record["split"] = split
                if config == "bounds":
                    record["objects"] = [
                        {**o, "category": classes[o["category"]]} for o in record["objects"]
                    ]
                else:
                    record["label"] = classes[record["label"]]
                rows[record["image_id"]] = record
    return rows


def class_counts(path: Path | str) -> dict[str, dict[str, Counter]]:
    """config -> split -> class -> count (rows for classifiers, boxes for bounds; '(frames)' too)."""
    out: dict[str, dict[str, Counter]] = {}
    for config in schema.CONFIGS:
        per_split: dict[str, Counter] = {}
        for record in read_labels(path, config).values():
            counter = per_split.setdefault(record["split"], Counter())
            if config == "bounds":
                counter["(frames)"] += 1
                counter.update(o["category"] for o in record["objects"])
            else:
                counter[record["label"]] += 1
        if per_split:
            out[config] = per_split
    return out


def format_counts(counts: dict[str, dict[str, Counter]]) -> str:
    lines = []
    for config, per_split in counts.items():
        splits = [s for s in schema.SPLITS if s in per_split]
        classes = list(schema.class_names(config)) + (["(frames)"] if config == "bounds" else [])
        unit = "boxes" if config == "bounds" else "rows"
        lines.append(f"{config} ({unit})")
        lines.append("  " + f"{'class':<10}" + "".join(f"{s:>12}" for s in splits) + f"{'all':>12}")
        for c in classes:
            values = [per_split[s][c] for s in splits]
            lines.append("  " + f"{c:<10}" + "".join(f"{v:>12,}" for v in values) + f"{sum(values):>12,}")
        if config != "bounds":
            totals = [sum(per_split[s].values()) for s in splits]
            lines.append("  " + f"{'total':<10}" + "".join(f"{v:>12,}" for v in totals) + f"{sum(totals):>12,}")
    return "\n".join(lines)


def plot_counts(counts: dict[str, dict[str, Counter]], out: Path | str) -> Path:
    """Class histograms, one panel per config, bars per split (needs matplotlib: the [dev] or [baselines] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib, which is not installed: pip install 'fpus23[dev]'") from None
    configs = list(counts)
    figure, axes = plt.subplots(1, len(configs), figsize=(4.2 * len(configs), 3.6), squeeze=False)
    for axis, config in zip(axes[0], configs):
        per_split = counts[config]
        classes = list(schema.class_names(config))
        splits = [s for s in schema.SPLITS if s in per_split]
        width = 0.8 / max(len(splits), 1)
        for k, split in enumerate(splits):
            axis.bar([i + k * width for i in range(len(classes))], [per_split[split][c] for c in classes], width, label=split)
        axis.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(classes))], classes, rotation=20)
        axis.set_title(f"{config} ({'boxes' if config == 'bounds' else 'frames'})")
        axis.legend(fontsize=8)
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
