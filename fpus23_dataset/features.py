"""Hugging Face features of each config, declared once, in the form `datasets` serialises them.

All configs are stored in one table (`data/<split>-*.parquet`, one row per frame and config, a
`config` column naming the row's config): each image is stored once per row group, as a value of
the Parquet dictionary page of `image.bytes` that the rows of its frame share. Each config is a
view of that table — its columns, its rows (`config == name`) and its own features (ClassLabel
names) — declared in the card.

The builder derives the Arrow schema and the card's YAML from this declaration without importing
`datasets`: that import (pandas included) takes about a second, a quarter of a whole build of the 34
shared streams. `features_for` gives the `datasets.Features` object; tests check that the three views
agree field for field with what `datasets` itself derives.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from . import schema

if TYPE_CHECKING:
    from datasets import Features

_ARROW_VALUES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64()}
IMAGE_ARROW_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
CONFIG_COLUMN = "config"
DATA_DIR = "data"  # data/<split>-0000k-of-0000n.parquet


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _class_label(names) -> dict:
    return {"names": list(names), "_type": "ClassLabel"}


def feature_dict(config: str) -> dict[str, Any]:
    """The declaration: `datasets.Features.to_dict()` form, one entry per column, in column order."""
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
    if config == "bounds":
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


def config_columns(config: str) -> list[str]:
    """The stored columns a config's view shows, in order."""
    return list(feature_dict(config))


def stored_feature_dict() -> dict[str, Any]:
    """The stored table's features: every config's columns, plus the config a row belongs to.

    `label` is the class index within the row's own config (its names differ between configs, so
    the table stores it as an integer and each config's view declares its ClassLabel); `objects`
    is null except in bounds rows.
    """
    classifier = feature_dict(next(iter(schema.CLASSIFICATION_TASKS)))
    features: dict[str, Any] = {CONFIG_COLUMN: _value("string")}
    features.update((name, spec) for name, spec in classifier.items() if name != "label")
    features["label"] = _value("int64")
    features["objects"] = feature_dict("bounds")["objects"]
    return features


def stored_arrow_schema() -> pa.Schema:
    """The Parquet schema of the stored table, with the `huggingface` metadata `datasets` reads back.

    image.bytes is plain binary to Arrow (a dictionary type inside a struct breaks pyarrow's
    `ParquetFile.iter_batches`) and dictionary-encoded in the Parquet file: each image stored once.
    """
    return _arrow_schema(stored_feature_dict())


def arrow_schema(config: str) -> pa.Schema:
    """The Arrow schema of a config as `datasets` loads it (its view of the stored table)."""
    return _arrow_schema(feature_dict(config))


def _arrow_schema(declared: dict[str, Any]) -> pa.Schema:
    metadata = {"huggingface": json.dumps({"info": {"features": declared}})}
    return pa.schema([(name, _arrow_type(spec)) for name, spec in declared.items()], metadata=metadata)


def _arrow_type(spec: dict) -> pa.DataType:
    kind = spec.get("_type")
    if kind == "Image":
        return IMAGE_ARROW_TYPE
    if kind == "Value":
        return _ARROW_VALUES[spec["dtype"]]
    if kind == "ClassLabel":
        return pa.int64()
    if kind == "List":
        inner = _arrow_type(spec["feature"])
        return pa.list_(inner, spec["length"]) if "length" in spec else pa.list_(inner)
    if kind is None:  # a dict of sub-features: a struct
        return pa.struct([(name, _arrow_type(sub)) for name, sub in spec.items()])
    raise ValueError(f"feature type {kind!r} is not used by fpus23")


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
    """The `dataset_info.features` list of the card (what `Features._to_yaml_list()` writes)."""
    return [_yaml_entry(name, spec) for name, spec in feature_dict(config).items()]


def features_for(config: str) -> "Features":
    from datasets import Features

    return Features.from_dict(feature_dict(config))
