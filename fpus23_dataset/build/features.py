"""Hugging Face features of each config, declared once, in the form `datasets` serialises them.

Each config is its own table (`<config>/<split>-NNNNN-of-NNNNN.parquet`): the Arrow schema, the
`huggingface` schema metadata every Parquet file carries, and the card's `dataset_info` YAML all come
from `feature_dict`. The YAML is written here because `datasets` has no public API for it; a test
checks it against what `datasets` itself writes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import schema

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Features


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _class_label(names) -> dict:
    return {"names": list(names), "_type": "ClassLabel"}


def feature_dict(config: str) -> dict[str, Any]:
    """`datasets.Features.to_dict()` form, one entry per column, in column order.

    Every column is always set except `probe` (null where the frame has no Probe tag).
    """
    features: dict[str, Any] = {
        "image": {"_type": "Image"},
        "image_id": _value("string"),
        "stream": _value("string"),
        "frame": _value("int32"),
        "probe": _class_label(schema.PROBE.classes),
        "width": _value("int32"),
        "height": _value("int32"),
        "paper_split": _value("string"),
    }
    if config == schema.DETECTION_TASK:
        features["objects"] = {
            "feature": {
                "id": _value("int64"),
                "bbox": {"feature": _value("float64"), "length": 4, "_type": "List"},
                "category": _class_label(schema.BOX_CATEGORIES),
                "area": _value("float64"),
            },
            "_type": "List",
        }
    else:
        features["label"] = _class_label(schema.class_names(config))
    return features


def features_for(config: str) -> "Features":
    from datasets import Features

    return Features.from_dict(feature_dict(config))


def arrow_schema(config: str) -> "pa.Schema":
    """The Parquet schema of a config, with the `huggingface` metadata that makes each file describe itself."""
    return features_for(config).arrow_schema


def image_columns(config: str) -> list[str]:
    """Leaf columns holding image bytes: stored as `datasets` stores embedded files (PLAIN, uncompressed)."""
    return [f"{name}.bytes" for name, spec in feature_dict(config).items() if spec.get("_type") == "Image"]


def _yaml_entry(name: str | None, spec: dict) -> dict:
    entry: dict[str, Any] = {} if name is None else {"name": name}
    kind = spec.get("_type")
    if kind == "Image":
        entry["dtype"] = "image"
    elif kind == "Value":
        entry["dtype"] = spec["dtype"]
    elif kind == "ClassLabel":
        entry["dtype"] = {"class_label": {"names": {str(i): n for i, n in enumerate(spec["names"])}}}
    elif kind == "List":
        inner = spec["feature"]
        if inner.get("_type") is None:
            entry["list"] = [_yaml_entry(sub_name, sub) for sub_name, sub in inner.items()]
        else:
            entry["list"] = _yaml_entry(None, inner)["dtype"]
        if "length" in spec:
            entry["length"] = spec["length"]
    else:
        raise ValueError(f"feature type {kind!r} is not used by fpus23")
    return entry


def yaml_features(config: str) -> list[dict]:
    """The `dataset_info.features` list of the card."""
    return [_yaml_entry(name, spec) for name, spec in feature_dict(config).items()]
