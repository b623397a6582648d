"""Render the dataset card (README.md with YAML metadata) from the template in cards/."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from collections import Counter

import jinja2
import yaml

from .. import schema
from ..report import CODES, Report
from .features import yaml_features

def _metadata(version: str, fingerprint: str, frames: int, sizes: dict[tuple[str, str], tuple[int, int]],
              files: dict[str, int]) -> dict:
    """One `configs` entry per config with its own data files, and its `dataset_info` (features, split sizes).

    `num_bytes` counts the config's image bytes; `download_size` its files.
    """
    configs, infos = [], []
    for config in schema.CONFIGS:
        splits = [s for s in schema.SPLITS if sizes.get((config, s), (0, 0))[0] > 0]
        if not splits:
            continue
        configs.append({"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*.parquet"} for s in splits]})
        infos.append({
            "config_name": config,
            "features": yaml_features(config),
            "splits": [{"name": s, "num_bytes": sizes[(config, s)][1], "num_examples": sizes[(config, s)][0]} for s in splits],
            "download_size": sum(size for name, size in files.items() if name.startswith(f"{config}/")),
            "dataset_size": sum(sizes[(config, s)][1] for s in splits),
        })
    return {
        "pretty_name": "FPUS23 fetus phantom ultrasound",
        "license": "mit",
        "language": ["en"],
        "task_categories": ["image-classification", "object-detection"],
        "tags": ["ultrasound", "fetal", "phantom", "medical-imaging", "cvat"],
        "size_categories": [_size_category(frames)],
        "version": version,
        "source_fingerprint": fingerprint,
        "configs": configs,
        "dataset_info": infos,
    }


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


TEMPLATE = "dataset_card.md.j2"


def _template_text() -> str:
    """The card template: packaged as fpus23_dataset.cards, or cards/ of a source checkout."""
    try:
        return resources.files("fpus23_dataset.cards").joinpath(TEMPLATE).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parents[2] / "cards" / TEMPLATE).read_text(encoding="utf-8")


def render_card(*, version: str, fingerprint: str, layout: str, frames: int, counts: dict[str, dict[str, Counter]],
                report: Report, sizes: dict[tuple[str, str], tuple[int, int]], files: dict[str, int]) -> str:
    """The card: YAML metadata `load_dataset` and the Hub read, then counts, splits and what was left out."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    tables = []
    for config in schema.CONFIGS:
        per_split = counts.get(config, {})
        if not per_split:
            continue
        classes = schema.class_names(config)
        splits = [s for s in schema.SPLITS if s in per_split]
        detection = config == schema.DETECTION_TASK
        rows = [[c] + [f"{per_split[s][c]:,}" for s in splits] + [f"{sum(per_split[s][c] for s in splits):,}"] for c in classes]
        totals = [per_split[s]["(frames)"] if detection else sum(per_split[s].values()) for s in splits]
        rows.append(["frames (rows)" if detection else "total"] + [f"{n:,}" for n in totals] + [f"{sum(totals):,}"])
        tables.append({"config": config, "unit": "boxes" if config == schema.DETECTION_TASK else "frames", "header": ["class"] + splits + ["all"], "rows": rows})
    excluded = [
        {"config": c, "reasons": ", ".join(f"{r}: {n:,}" for r, n in sorted(reasons.items()))}
        for c, reasons in sorted(report.excluded.items())
    ]
    problems = [{"code": code, "count": n, "effect": CODES[code][1]} for code, n in sorted(report.counts.items())]
    metadata = yaml.safe_dump(_metadata(version, fingerprint, frames, sizes, files), sort_keys=False, allow_unicode=True, width=120)
    return environment.from_string(_template_text()).render(
        metadata=metadata.rstrip("\n"), version=version, fingerprint=fingerprint, layout=layout, tables=tables,
        excluded=excluded, omitted=sorted(report.omitted.items()), problems=problems, schema=schema,
        frames=frames,
    )
