"""Read a built dataset's rows straight from its Parquet shards, one config at a time.

All configs share the files `data/<split>-*.parquet` (see `features`); a config's rows are those
whose `config` column names it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .features import CONFIG_COLUMN, DATA_DIR


def shard_files(path: Path | str, config: str) -> dict[str, list[Path]]:
    """split -> the shard files holding `config`'s rows, in order.

    Builds by fpus23 0.1 kept a folder of files per config (`<config>/<split>-*.parquet`, no
    `config` column); they are read as they are, so `diff`, `stats` and `export` span both layouts.
    """
    root = Path(path)
    folder = root / DATA_DIR
    if not folder.is_dir():
        folder = root / config
        if not folder.is_dir() and not any((root / c).is_dir() for c in schema.CONFIGS):
            raise FileNotFoundError(f"{path}: not an fpus23 build (no {DATA_DIR}/ folder); run `fpus23 build --out {path}`")
    out: dict[str, list[Path]] = {}
    for file in sorted(folder.glob("*.parquet")):
        out.setdefault(file.name.split("-")[0], []).append(file)
    return {s: out[s] for s in schema.SPLITS if s in out}


def config_rows(files: list[Path], config: str) -> int:
    """How many rows of `config` the files hold (reads only the config column)."""
    import pyarrow.compute as pc  # not at module level: `fpus23 build` imports this module to print counts

    total = 0
    for file in files:
        parquet = pq.ParquetFile(file)
        if CONFIG_COLUMN not in parquet.schema_arrow.names:  # a file of one config (0.1 layout)
            total += parquet.metadata.num_rows
        else:
            total += pc.sum(pc.equal(parquet.read(columns=[CONFIG_COLUMN])[CONFIG_COLUMN], config)).as_py() or 0
    return total


def iter_batches(files: list[Path], config: str, columns: list[str], batch_size: int = 64) -> Iterator[pa.RecordBatch]:
    """A config's rows from some shard files, in stored order, `batch_size` at most at a time."""
    import pyarrow.dataset as ds  # imports pandas: a third of a second `fpus23 build` need not spend

    schema.class_names(config)  # validates the config name
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    shared = CONFIG_COLUMN in dataset.schema.names
    scanner = dataset.scanner(columns=columns, filter=ds.field(CONFIG_COLUMN) == config if shared else None,
                              batch_size=batch_size, use_threads=False)
    for batch in scanner.to_batches():
        if batch.num_rows:
            yield batch


def read_labels(path: Path | str, config: str) -> dict[str, dict]:
    """image_id -> {"split", "paper_split", "label" | "objects", "stream", "frame"} for one config."""
    columns = ["image_id", "stream", "frame", "paper_split", "width", "height"] + (["objects"] if config == "bounds" else ["label"])
    rows: dict[str, dict] = {}
    classes = schema.class_names(config)
    for split, files in shard_files(path, config).items():
        for batch in iter_batches(files, config, columns, batch_size=4096):
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
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("plotting needs matplotlib: pip install 'fpus23[dev]'") from error
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
