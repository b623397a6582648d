"""Render the dataset card (README.md with YAML metadata) from the template in cards/."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import yaml

from . import schema
from .features import CONFIG_COLUMN, DATA_DIR, config_columns, yaml_features
from .report import CODES

if TYPE_CHECKING:
    from .build import BuildResult

CITATION = """@article{prabakaran2023fpus23,
  title   = {FPUS23: An Ultrasound Fetus Phantom Dataset with Deep Neural Network Evaluations for Fetus Orientations, Fetal Planes, and Anatomical Features},
  author  = {Prabakaran, Bharath Srinivas and Hamelmann, Paul and Ostrowski, Erik and Shafique, Muhammad},
  journal = {IEEE Access},
  year    = {2023},
  doi     = {10.1109/ACCESS.2023.3284315}
}"""


def _metadata(result: "BuildResult", split_sizes: dict[tuple[str, str], tuple[int, int]]) -> dict:
    """Each config is a view of the shared table: its columns, its rows (`config == name`), its features.

    `num_bytes` counts the config's own images; `download_size` the shared files its splits read.
    """
    configs, infos = [], []
    for config in schema.CONFIGS:
        splits = [s for s in schema.SPLITS if (config, s) in split_sizes and split_sizes[(config, s)][0] > 0]
        if not splits:
            continue
        configs.append(
            {
                "config_name": config,
                "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*.parquet"} for s in splits],
                "columns": config_columns(config),
                "filters": [[CONFIG_COLUMN, "==", config]],
            }
        )
        size = sum(split_sizes[(config, s)][1] for s in splits)
        infos.append(
            {
                "config_name": config,
                "features": yaml_features(config),
                "splits": [
                    {"name": s, "num_bytes": split_sizes[(config, s)][1], "num_examples": split_sizes[(config, s)][0]}
                    for s in splits
                ],
                "download_size": sum(result.file_sizes.get(s, 0) for s in splits),
                "dataset_size": size,
            }
        )
    return {
        "pretty_name": "FPUS23 fetus phantom ultrasound",
        "license": "mit",
        "language": ["en"],
        "task_categories": ["image-classification", "object-detection"],
        "tags": ["ultrasound", "fetal", "phantom", "medical-imaging", "cvat"],
        "size_categories": [_size_category(result.frames_read)],
        "version": result.version,
        "source_fingerprint": result.fingerprint,
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
        return (Path(__file__).resolve().parents[1] / "cards" / TEMPLATE).read_text(encoding="utf-8")


def render_card(result: "BuildResult", layout: str, split_sizes: dict[tuple[str, str], tuple[int, int]]) -> str:
    template_text = _template_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    tables = []
    for config in schema.CONFIGS:
        per_split = result.counts.get(config, {})
        if not per_split:
            continue
        classes = schema.class_names(config)
        splits = [s for s in schema.SPLITS if s in per_split]
        rows = [[c] + [f"{per_split[s][c]:,}" for s in splits] + [f"{sum(per_split[s][c] for s in splits):,}"] for c in classes]
        if config == "bounds":
            rows.append(["frames (rows)"] + [f"{per_split[s]['__rows__']:,}" for s in splits] + [f"{sum(per_split[s]['__rows__'] for s in splits):,}"])
        else:
            rows.append(["total"] + [f"{sum(per_split[s].values()):,}" for s in splits] + [f"{sum(sum(per_split[s].values()) for s in splits):,}"])
        tables.append({"config": config, "unit": "boxes" if config == "bounds" else "frames", "header": ["class"] + splits + ["all"], "rows": rows})
    excluded = [
        {"config": c, "reasons": ", ".join(f"{r}: {n:,}" for r, n in sorted(reasons.items()))}
        for c, reasons in sorted(result.report.excluded.items())
    ]
    problems = [
        {"code": code, "count": n, "effect": CODES[code][1]} for code, n in sorted(result.report.counts.items())
    ]
    metadata = yaml.safe_dump(_metadata(result, split_sizes), sort_keys=False, allow_unicode=True, width=120)
    return environment.from_string(template_text).render(
        metadata=metadata.rstrip("\n"),
        version=result.version,
        fingerprint=result.fingerprint,
        layout=layout,
        tables=tables,
        excluded=excluded,
        problems=problems,
        citation=CITATION,
        schema=schema,
        frames=result.frames_read,
    )
