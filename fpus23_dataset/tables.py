"""Read a built dataset's label columns (never the images) straight from its Parquet shards."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from . import schema


def shard_files(path: Path | str, config: str) -> dict[str, list[Path]]:
    """split -> its shard files, in order."""
    folder = Path(path) / config
    out: dict[str, list[Path]] = {}
    for file in sorted(folder.glob("*.parquet")):
        out.setdefault(file.name.split("-")[0], []).append(file)
    return {s: out[s] for s in schema.SPLITS if s in out}


def read_labels(path: Path | str, config: str) -> dict[str, dict]:
    """image_id -> {"split", "paper_split", "label" | "objects", "stream", "frame"} for one config."""
    columns = ["image_id", "stream", "frame", "paper_split", "width", "height"] + (["objects"] if config == "bounds" else ["label"])
    rows: dict[str, dict] = {}
    classes = schema.class_names(config)
    for split, files in shard_files(path, config).items():
        for file in files:
            table = pq.read_table(file, columns=columns)
            for record in table.to_pylist():
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
